"""A fleet of 20 registries sharing one Redis: upstream fetches per refresh period, shared or not.

All 20 registries live in one process and event loop (each with its own RedisStore client, as 20
pods would have), register the same provider and look its key up at once: that is the cold-start
period. The full run then waits one real refresh period (TTL 30 s, refresh_early 5 s) and counts
the fetches of that period too. The comparison is the same fleet with ``shared=False``.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import anyio

from ._common import BACKENDS, PROVIDER, TENANT, CaseResult, Row, config, idp_in_thread, loopback_registry, verdict
from ._redis import redis_server

NAME = "fleet"
_INSTANCES = 20
_TTL = 30.0
_SHARED_LIMIT = 2


def _store_class() -> Any:
    try:
        from jwks_cache.redis import RedisStore
    except ImportError:
        return None
    if not hasattr(RedisStore, "acquire_lease"):
        return None
    return RedisStore


async def _fleet(store_class: Any, redis_url: str, jwks_url: str, kid: str, shared: bool, period: bool, counter: Any) -> dict[str, Any]:
    namespace = f"bench-fleet-{'shared' if shared else 'local'}-{time.monotonic_ns()}"
    cfg = config(jwks_url, refresh_early=5.0, prefetch_jitter=1.0)
    async with AsyncExitStack() as stack:
        registries = []
        for _ in range(_INSTANCES):
            store = store_class(redis_url, namespace=namespace, shared=shared)
            registries.append(await stack.enter_async_context(loopback_registry(store=store)))
        before = counter()
        began = time.perf_counter()
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for reg in registries:
                    await reg.register(cfg)
                for reg in registries:
                    tg.start_soon(reg.get_key, TENANT, PROVIDER, kid)
        cold = counter() - before
        figures: dict[str, Any] = {"cold_fetches": cold, "cold_seconds": time.perf_counter() - began}
        if period:
            before = counter()
            await anyio.sleep(_TTL + 2.0)  # real time: leases and Redis TTLs run on the real clock
            figures["period_fetches"] = counter() - before
            figures["all_serving"] = all(reg.get_key_nowait(TENANT, PROVIDER, kid) for reg in registries)
    return figures


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    store_class = _store_class()
    if store_class is None:
        result.skip("-", "SKIP (not available yet: RedisStore with fleet primitives)")
        return result
    with redis_server() as redis_url:
        if redis_url is None:
            result.skip("-", "SKIP (redis-server not found)")
            return result
        with idp_in_thread(keys=2) as (idp, _portal):
            idp.cache_control = f"max-age={_TTL:g}"

            def counter() -> int:
                return idp.request_count

            for backend in BACKENDS:
                runs = {
                    mode: anyio.run(
                        _fleet, store_class, redis_url, idp.jwks_url, idp.kids[0], mode == "shared", not quick, counter,
                        backend=backend,
                    )
                    for mode in ("shared", "local")
                }
                result.raw[backend] = runs
                _rows(result, backend, runs)
    return result


def _rows(result: CaseResult, backend: str, runs: dict[str, dict[str, Any]]) -> None:
    shared, local = runs["shared"], runs["local"]
    periods = [("cold start", "cold_fetches")] + ([("refresh period", "period_fetches")] if "period_fetches" in shared else [])
    if shared["cold_fetches"] >= _INSTANCES:
        result.skip(backend, "SKIP (not available yet: shared mode fetched once per instance)")
        return
    for label, field in periods:
        ours, alone = shared[field], local[field]
        result.add(Row(NAME, backend, f"{label}: fetches without shared mode", alone, "fetches"))
        result.add(
            Row(
                NAME,
                backend,
                f"{label}: fetches, {_INSTANCES} sharing Redis",
                ours,
                "fetches",
                "shared=False",
                ours / alone if alone else None,
                f"<= {_SHARED_LIMIT} (vs {_INSTANCES})",
                verdict(ours <= _SHARED_LIMIT),
            )
        )
