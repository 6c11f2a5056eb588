"""Memory for N providers x 5 RSA keys: a warm Registry against N warm PyJWKClients.

Each measurement runs in a fresh interpreter (``python -m benchmarks.memory worker ...``) so one
side's arenas and caches never count against the other; the identity provider runs in a third
process so its request log and buffers count against neither. RSS (from /proc) and tracemalloc are
measured in separate runs because tracing slows everything and its own bookkeeping inflates RSS.
Figures are the growth from a warmed-up baseline (one provider already fetched) to N warm providers.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._common import CaseResult, Row, config, loopback_registry, rss_bytes, tenant_name, verdict

NAME = "memory"
_KEYS = 5
_TARGET_FRACTION = 1 / 3
_REFERENCE = 10_000
_ROOT = Path(__file__).resolve().parent.parent


# -- child processes ------------------------------------------------------------------------------


async def _serve() -> None:
    from jwks_cache.testing import LocalIdentityProvider

    async with LocalIdentityProvider(keys=_KEYS) as idp:
        print(json.dumps({"jwks_url": idp.jwks_url, "kid": idp.kids[0]}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin


def _start(trace: bool) -> float:
    gc.collect()
    if trace:
        tracemalloc.start()
        return float(tracemalloc.get_traced_memory()[0])
    return float(rss_bytes())


def _stop(trace: bool, start: float) -> float:
    gc.collect()
    if trace:
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return current - start
    return rss_bytes() - start


async def _ours(url: str, kid: str, n: int, trace: bool) -> float:
    async with loopback_registry() as reg:
        await reg.register(config(url, tenant="warmup"))
        await reg.get_key("warmup", "idp", kid)
        start = _start(trace)
        for i in range(n):
            await reg.register(config(url, tenant=tenant_name(i)))
        with anyio.fail_after(600):
            for i in range(n):
                await reg.get_key(tenant_name(i), "idp", kid)
        grown = _stop(trace, start)
        assert all(s.key_ids for s in reg.statuses())
        return grown


def _peer(url: str, kid: str, n: int, trace: bool) -> float:
    import jwt

    def warm(_: int) -> Any:
        client = jwt.PyJWKClient(url)
        client.get_signing_key(kid)
        return client

    warm(0)
    start = _start(trace)
    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = list(pool.map(warm, range(n)))
    grown = _stop(trace, start)
    assert len(clients) == n
    return grown


def _worker(side: str, backend: str, n: int, trace: bool, url: str, kid: str) -> None:
    grown = anyio.run(_ours, url, kid, n, trace, backend=backend) if side == "ours" else _peer(url, kid, n, trace)
    print(json.dumps({"bytes": grown}), flush=True)


# -- the case -------------------------------------------------------------------------------------


def _child(*args: str, timeout: float = 900) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", *args],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


def _sizes(quick: bool) -> dict[str, int]:
    """Providers measured per mode; tracing slows a fetch about fivefold, so it measures fewer."""
    return {"rss": 200, "tracemalloc": 200} if quick else {"rss": _REFERENCE, "tracemalloc": 1_000}


def _runs(quick: bool) -> list[tuple[str, str, str]]:
    """(side, backend, mode) per child; the quick run traces one backend only."""
    runs = [("ours", "asyncio", "rss"), ("ours", "trio", "rss"), ("pyjwkclient", "threads", "rss")]
    runs += [("ours", "asyncio", "tracemalloc"), ("pyjwkclient", "threads", "tracemalloc")]
    if not quick:
        runs.append(("ours", "trio", "tracemalloc"))
    return runs


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    sizes = _sizes(quick)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.memory", "serve"],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        url, kid = info["jwks_url"], info["kid"]
        figures: dict[str, dict[str, float]] = {}
        for side, backend, mode in _runs(quick):
            began = time.perf_counter()
            grown = _child("worker", side, backend, str(sizes[mode]), mode, url, kid)["bytes"]
            figures.setdefault(f"{side}/{backend}", {})[mode] = grown
            figures[f"{side}/{backend}"][f"{mode}_seconds"] = time.perf_counter() - began
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    result.raw = {"providers_measured": sizes, "keys_per_provider": _KEYS, "bytes_grown": figures}
    _rows(result, figures, sizes)
    return result


def _rows(result: CaseResult, figures: dict[str, dict[str, float]], sizes: dict[str, int]) -> None:
    peer = figures["pyjwkclient/threads"]
    for mode in ("rss", "tracemalloc"):
        scale = _REFERENCE / sizes[mode]
        suffix = f" (x{scale:.3g} of {sizes[mode]})" if scale != 1 else ""
        result.add(Row(NAME, "threads", f"PyJWKClient x{_REFERENCE} {mode}{suffix}", peer[mode] * scale / 2**20, "MiB"))
        for backend in ("asyncio", "trio"):
            ours = figures[f"ours/{backend}"]
            if mode not in ours:
                continue
            ratio = ours[mode] / peer[mode]
            result.add(
                Row(
                    NAME,
                    backend,
                    f"{_REFERENCE} providers {mode}{suffix}",
                    ours[mode] * scale / 2**20,
                    "MiB",
                    "PyJWKClient",
                    ratio,
                    "<= 0.33x",
                    verdict(ratio <= _TARGET_FRACTION),
                )
            )


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        anyio.run(_serve)
    else:
        _, _, side_arg, backend_arg, n_arg, mode_arg, url_arg, kid_arg = sys.argv
        _worker(side_arg, backend_arg, int(n_arg), mode_arg == "tracemalloc", url_arg, kid_arg)
