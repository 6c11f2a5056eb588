"""A fleet of 20 registries sharing one Redis: upstream fetches per refresh period, shared or not.

All 20 registries live in one process and event loop, each with its own RedisStore client as 20
pods would have (they share one httpx client, which changes no count). They register the same
provider and look its key up at once: that is the cold-start period. The full run then waits one
real refresh period (TTL 30 s, refresh_early 5 s) and counts that period's fetches too, and checks
that every instance ended it READY (a fleet that stopped refreshing serves stale keys for a while).

The comparisons are the same fleet with ``shared=False`` (instances still restore each other's
snapshots at registration, but refresh on their own) and with no store at all. All three fleets run
at once, each against its own identity provider, so the full run waits one real period, not three.

The rotation part: 8 registries share one Redis (default unknown-kid cooldown, 30 s), the identity
provider rotates its key, and every instance verifies a token signed by the new key at the same
moment. It counts the upstream requests that rotation cost, the tokens refused, and the time until
the whole fleet accepted the new key; once with every notice heard and once with the notices of
all instances but one lost (their listener never delivers), where the store poll must carry it.
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
_ROTATION_INSTANCES = 8
_ROTATION_LIMIT = 2  # upstream requests per rotation, fleet-wide
_TOKENS_PER_INSTANCE = 4


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


def _deaf_store_class(store_class: Any) -> Any:
    """A store whose notices never arrive (a listener forever reconnecting)."""

    class DeafStore(store_class):  # type: ignore[misc]
        async def listen(self, on_notice: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await anyio.sleep_forever()

    return DeafStore


async def _rotation(store_class: Any, redis_url: str, idp: Any, portal: Any, deaf: int) -> dict[str, Any]:
    """Rotate, then every instance verifies new-key tokens at once: requests, refusals, time to acceptance."""
    namespace = f"bench-rotation-{deaf}-{time.monotonic_ns()}"
    cfg = config(idp.jwks_url, retry=RetryPolicy())
    deaf_class = _deaf_store_class(store_class)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        registries = []
        for index in range(_ROTATION_INSTANCES):
            kind = deaf_class if index < deaf else store_class
            store = kind(redis_url, namespace=namespace, shared=True)
            registries.append(await stack.enter_async_context(loopback_registry(store=store, http_client=client)))
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:  # warm: one cold fetch for the fleet
                for reg in registries:
                    await reg.register(cfg)
                for reg in registries:
                    tg.start_soon(reg.get_key, TENANT, PROVIDER, idp.kids[0])
        new = portal.call(idp.rotate)
        tokens = [portal.call(lambda n=n: idp.mint({"sub": f"user-{n}"}, kid=new)) for n in range(_TOKENS_PER_INSTANCE)]
        before, refused, accepted_at = idp.request_count, 0, 0.0
        began = time.perf_counter()

        async def verify(reg: Any, token: str) -> None:
            nonlocal refused, accepted_at
            try:
                await reg.verify(token, tenant=TENANT, provider=PROVIDER)
            except Exception:
                refused += 1
            else:
                accepted_at = max(accepted_at, time.perf_counter() - began)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for reg in registries:
                    for token in tokens:
                        tg.start_soon(verify, reg, token)
        return {
            "upstream_requests": idp.request_count - before,
            "refused": refused,
            "tokens": len(registries) * len(tokens),
            "seconds_to_fleet_acceptance": accepted_at if refused == 0 else None,
        }


async def _rotations(store_class: Any, redis_url: str, idp: Any, portal: Any) -> dict[str, Any]:
    return {
        "notices heard": await _rotation(store_class, redis_url, idp, portal, deaf=0),
        "notices lost": await _rotation(store_class, redis_url, idp, portal, deaf=_ROTATION_INSTANCES - 1),
    }


def _rotation_rows(result: CaseResult, backend: str, rotations: dict[str, dict[str, Any]]) -> None:
    for label, figures in rotations.items():
        prefix = f"rotation, {_ROTATION_INSTANCES} instances, {label}"
        requests, refused = figures["upstream_requests"], figures["refused"]
        limit = f"<= {_ROTATION_LIMIT}"
        result.add(Row(NAME, backend, f"{prefix}: upstream requests", requests, "requests", target=limit,
                       status=verdict(requests <= _ROTATION_LIMIT)))  # fmt: skip
        result.add(Row(NAME, backend, f"{prefix}: tokens refused of {figures['tokens']}", refused, "tokens",
                       target="== 0", status=verdict(refused == 0)))  # fmt: skip
        seconds = figures["seconds_to_fleet_acceptance"]
        if seconds is not None:
            result.add(Row(NAME, backend, f"{prefix}: time to fleet-wide acceptance", seconds * 1000, "ms"))


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
        rotating, portal = stack.enter_context(idp_in_thread(keys=1))
        for backend in BACKENDS:
            runs = anyio.run(_all_modes, store_class, redis_url, idps, not quick, backend=backend)
            rotations = anyio.run(_rotations, store_class, redis_url, rotating, portal, backend=backend)
            result.raw[backend] = {**runs, "rotation": rotations}
            _rows(result, backend, runs)
            _rotation_rows(result, backend, rotations)
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
