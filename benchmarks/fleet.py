"""A fleet of 20 registries sharing one Redis: upstream fetches per refresh period, shared or not.

All 20 registries live in one process and event loop, each with its own RedisStore client as 20
pods would have (they share one httpx client, which changes no count). They register the same
provider and look its key up at once: that is the cold-start period. The full run then waits one
real refresh period (TTL 30 s, refresh_early 5 s) and counts that period's fetches too, and checks
that every instance ended it READY (a fleet that stopped refreshing serves stale keys for a while).

The comparisons are the same fleet with ``shared=False`` (instances still restore each other's
snapshots at registration, but refresh on their own) and with no store at all. All three fleets run
at once, each against its own identity provider, so the full run waits one real period, not three.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import anyio
import httpx

from jwks_cache import ProviderState, RetryPolicy

from ._common import BACKENDS, PROVIDER, TENANT, CaseResult, Row, config, idp_in_thread, loopback_registry, verdict
from ._redis import redis_server

NAME = "fleet"
_INSTANCES = 20
_TTL = 30.0
_SHARED_LIMIT = 2
_MODES = ("shared", "shared=False", "no store")


def _store_class() -> Any:
    try:
        from jwks_cache.redis import RedisStore
    except ImportError:
        return None
    if not hasattr(RedisStore, "acquire_lease"):
        return None
    return RedisStore


async def _fleet(store_class: Any, redis_url: str, mode: str, idp: Any, period: bool) -> dict[str, Any]:
    namespace = f"bench-fleet-{mode}-{time.monotonic_ns()}".replace("=", "-").replace(" ", "-")
    # the default retry policy: the fleet lease lasts max(min_ttl / 2, retry.deadline + 1) seconds
    cfg = config(idp.jwks_url, refresh_early=5.0, prefetch_jitter=1.0, retry=RetryPolicy())
    kid = idp.kids[0]
    async with AsyncExitStack() as stack:
        # one HTTP client for the whole fleet: building 20 TLS contexts costs more than the case itself
        client = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        registries = []
        for _ in range(_INSTANCES):
            store = None if mode == "no store" else store_class(redis_url, namespace=namespace, shared=mode == "shared")
            registries.append(await stack.enter_async_context(loopback_registry(store=store, http_client=client)))
        before = idp.request_count
        began = time.perf_counter()
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for reg in registries:
                    await reg.register(cfg)
                for reg in registries:
                    tg.start_soon(reg.get_key, TENANT, PROVIDER, kid)
        figures: dict[str, Any] = {
            "cold_fetches": idp.request_count - before,
            "cold_seconds": time.perf_counter() - began,
        }
        if period:
            before = idp.request_count
            await anyio.sleep(_TTL + 2.0)  # real time: leases and Redis TTLs run on the real clock
            figures["period_fetches"] = idp.request_count - before
            statuses = [reg.status(TENANT, PROVIDER) for reg in registries]
            # a fleet that stopped refreshing still serves stale keys for a while: demand fresh ones
            figures["states_after_period"] = sorted(str(s.state) for s in statuses)
            figures["all_fresh"] = all(s.state is ProviderState.READY for s in statuses)
            figures["refreshes_counted"] = sum(s.refreshes for s in statuses)
    return figures


async def _all_modes(store_class: Any, redis_url: str, idps: dict[str, Any], period: bool) -> dict[str, Any]:
    """Every mode at once, each against its own identity provider, so one real period serves all."""
    runs: dict[str, Any] = {}

    async def one(mode: str) -> None:
        runs[mode] = await _fleet(store_class, redis_url, mode, idps[mode], period)

    async with anyio.create_task_group() as tg:
        for mode in idps:
            tg.start_soon(one, mode)
    return runs


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    store_class = _store_class()
    if store_class is None:
        result.skip("-", "SKIP (not available yet: RedisStore with fleet primitives)")
        return result
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        if redis_url is None:
            result.skip("-", "SKIP (redis-server not found)")
            return result
        idps = {mode: stack.enter_context(idp_in_thread(keys=1))[0] for mode in _MODES}
        for idp in idps.values():
            idp.cache_control = f"max-age={_TTL:g}"
        for backend in BACKENDS:
            runs = anyio.run(_all_modes, store_class, redis_url, idps, not quick, backend=backend)
            result.raw[backend] = runs
            _rows(result, backend, runs)
    return result


def _rows(result: CaseResult, backend: str, runs: dict[str, dict[str, Any]]) -> None:
    shared = runs["shared"]
    periods = [("cold start", "cold_fetches")]
    if "period_fetches" in shared:
        periods.append(("refresh period", "period_fetches"))
    if shared["cold_fetches"] >= _INSTANCES:
        result.skip(backend, "SKIP (not available yet: shared mode fetched once per instance)")
        return
    for period, field in periods:
        ours, alone = shared[field], runs["shared=False"][field]
        result.add(Row(NAME, backend, f"{period}: fetches, shared=False", alone, "fetches"))
        result.add(Row(NAME, backend, f"{period}: fetches, no store", runs["no store"][field], "fetches"))
        result.add(
            Row(
                NAME,
                backend,
                f"{period}: fetches, {_INSTANCES} sharing Redis",
                ours,
                "fetches",
                "shared=False",
                ours / alone if alone else None,
                f"<= {_SHARED_LIMIT} (vs {_INSTANCES})",
                verdict(ours <= _SHARED_LIMIT),
            )
        )
    if "all_fresh" in shared:
        # a fleet that stopped refreshing still serves stale keys for a while: fetch counts alone can lie
        fresh = shared["all_fresh"]
        label = "after the period, every shared instance READY"
        result.add(Row(NAME, backend, label, int(fresh), "bool", target="== 1", status=verdict(fresh)))
        count = shared["refreshes_counted"]
        result.add(Row(NAME, backend, "refreshes counted by the shared fleet", count, "refreshes"))
