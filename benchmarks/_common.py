"""What every case shares: result rows, tight-loop timing, percentiles, machine facts, local servers.

Timing follows one rule: a contender is timed in batches with ``perf_counter_ns`` and the best
batch wins, because noise on a shared 2-core machine only ever adds time. Contenders of one case are
interleaved batch by batch so a frequency or neighbour change hits all of them alike. The helpers
live in ``jwks_cache._cli._timing`` because ``jwks-cache demo`` times its warm lookups the same way.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from anyio.from_thread import BlockingPortal, start_blocking_portal

from jwks_cache import ProviderConfig, Registry, RetryPolicy
from jwks_cache._cli._timing import best_per_call as best_per_call  # re-exported for the cases
from jwks_cache._cli._timing import time_async as time_async
from jwks_cache._cli._timing import time_sync as time_sync
from jwks_cache.testing import LocalIdentityProvider

BACKENDS: Final = ("asyncio", "trio")
TENANT: Final = "acme"
PROVIDER: Final = "idp"
#: a retry policy patient enough that a loaded 2-core machine never turns into timeouts mid-benchmark
PATIENT_RETRY: Final = RetryPolicy(max_retries=2, attempt_timeout=60.0, deadline=120.0)


@dataclass
class Row:
    """One line of the printed table; ``status`` is PASS, MISS, SKIP or INFO (no target)."""

    case: str
    backend: str
    metric: str
    value: float | None
    unit: str
    compared: str = ""
    ratio: float | None = None
    target: str = ""
    status: str = "INFO"


@dataclass
class CaseResult:
    """A case's rows for the table and its raw figures for the JSON file."""

    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def skip(self, backend: str, reason: str) -> None:
        self.rows.append(Row(self.name, backend, reason, None, "", status="SKIP"))

    def as_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "raw": self.raw, "notes": self.notes}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- timing -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- machine --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import importlib.metadata as metadata

    versions: dict[str, str | None] = {}
    for dist in ("jwks-cache", "anyio", "trio", "httpx", "joserfc", "cryptography", "PyJWT", "msgspec", "coredis"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "versions": versions,
        "load_average": os.getloadavg(),
    }


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (no psutil needed)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    """CPU time of the whole process, every thread included (user + system), in microsecond steps."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- local servers and registries ------------------------------------------------------------------


@contextmanager
def idp_in_thread(**kwargs: Any) -> Iterator[tuple[LocalIdentityProvider, BlockingPortal]]:
    """A LocalIdentityProvider on its own asyncio loop in a thread.

    Timed code then never shares its event loop with the server, and thread-based peers
    (PyJWKClient) can reach it. Call its async-touching methods through the portal.
    """
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(LocalIdentityProvider(**kwargs)) as idp,
    ):
        yield idp, portal


def loopback_registry(**kwargs: Any) -> Registry:
    """A Registry allowed to reach the plain-HTTP identity provider on 127.0.0.1."""
    return Registry(allow_private_networks=True, require_https=False, **kwargs)


def config(url: str, *, tenant: str = TENANT, provider: str = PROVIDER, **changes: Any) -> ProviderConfig:
    fields: dict[str, Any] = {
        "tenant": tenant,
        "provider": provider,
        "jwks_url": url,
        "require_https": False,
        "retry": PATIENT_RETRY,
    }
    fields.update(changes)
    return ProviderConfig(**fields)


def tenant_name(index: int) -> str:
    return f"t{index:05d}"
