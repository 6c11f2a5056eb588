"""A simulated day in virtual time: 200 providers refreshing against one LocalIdentityProvider.

Users' test suites run a registry's TTLs and refresh loop on a VirtualClock; what that costs in
real time decides whether a test may cover a day of refreshes. Every provider refreshes about every
270 s (``max-age=300`` less ``refresh_early``), so a day is some 64,000 real loopback requests and as
many jumps of the clock, each settled before the next. The identity provider lives in the same loop
(as in users' tests), so the clock can wait out its I/O.

The target is parity: a day on asyncio should cost about what it costs on trio. asyncio's debug mode
(which the project's own tests use) is reported too, for information: it records a stack for every
callback, so it is slower by itself, whatever the clock does.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from jwks_cache.testing import LocalIdentityProvider, VirtualClock

from ._common import PROVIDER, CaseResult, Row, config, cpu_seconds, loopback_registry, tenant_name, verdict

NAME = "virtual time"
_PROVIDERS = 200
_DAY = 86_400.0
_PARITY = 1.5  # asyncio's day within this factor of trio's
#: (label, anyio backend, backend options); the debug run is information only
_RUNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("asyncio", "asyncio", {}),
    ("trio", "trio", {}),
    ("asyncio debug", "asyncio", {"debug": True}),
)


async def _simulate(providers: int, span: float) -> dict[str, Any]:
    clock = VirtualClock()
    async with LocalIdentityProvider(keys=1) as idp, loopback_registry(clock=clock) as reg:
        await reg.register_many(config(idp.jwks_url, tenant=tenant_name(i)) for i in range(providers))
        kid = idp.kids[0]
        for i in range(providers):
            await reg.get_key(tenant_name(i), PROVIDER, kid)  # all warm before the clock starts
        before = idp.request_count
        began, cpu = time.perf_counter(), cpu_seconds()
        await clock.advance(span)
        seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu
        statuses = reg.statuses()
        return {
            "providers": providers,
            "virtual_seconds": span,
            "real_seconds": seconds,
            "cpu_seconds": cpu,
            "upstream_requests": idp.request_count - before,
            "refreshes": sum(s.refreshes for s in statuses),
            "errors": sum(s.error_count for s in statuses),
        }


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    span = _DAY / 12 if quick else _DAY
    metric = f"real s per simulated day, {_PROVIDERS} providers" + (" (x12)" if quick else "")
    per_day: dict[str, float] = {}
    for label, backend, options in _RUNS:
        figures = anyio.run(_simulate, _PROVIDERS, span, backend=backend, backend_options=options)
        result.raw[label] = figures
        per_day[label] = figures["real_seconds"] * _DAY / span
        # every provider refreshes about every 270 s: far fewer requests means the loop stalled
        healthy = figures["errors"] == 0 and figures["upstream_requests"] >= _PROVIDERS * span / 300
        result.add(Row(NAME, label, metric, per_day[label], "s", status=verdict(healthy)))
        result.add(Row(NAME, label, "upstream requests", figures["upstream_requests"], "requests"))
    ratio = per_day["asyncio"] / per_day["trio"]
    target = f"<= {_PARITY:g}x"
    result.add(
        Row(NAME, "asyncio", "day vs trio's", per_day["asyncio"], "s", "trio", ratio, target, verdict(ratio <= _PARITY))
    )
    result.notes.append(f"{NAME}: one advance() over the whole span; the debug-mode row is information.")
    return result
