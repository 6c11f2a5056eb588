"""Fleet mode: many registries sharing one Redis act as one cache (real redis-server processes)."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from tests.helpers import PROVIDER, QUICK_RETRY, TENANT, config_for, loopback_registry

from jwks_cache import JwksCacheError, KeyNotFoundError, Registry, RetryPolicy
from jwks_cache.redis import RedisStore
from jwks_cache.testing import LocalIdentityProvider, VirtualClock
from redis_servers import coredis_outage

INSTANCES = 20
RELAXED_REDIS_TIMEOUT = 3.0  # seconds


async def _fleet(
    stack: AsyncExitStack, url: str, namespace: str, *, shared: bool, count: int = INSTANCES
) -> list[Registry]:
    registries = []
    for _ in range(count):
        store = RedisStore(url, namespace=namespace, shared=True) if shared else None
        registries.append(await stack.enter_async_context(loopback_registry(store=store)))
    return registries


async def _cold_lookups(idp: LocalIdentityProvider, registries: list[Registry], **config: Any) -> None:
    for reg in registries:
        await reg.register(config_for(idp, **config))
    async with anyio.create_task_group() as tg:
        for reg in registries:
            tg.start_soon(reg.get_key, TENANT, PROVIDER, idp.kids[0])


@pytest.mark.parametrize(("shared", "limit"), [(True, 2), (False, INSTANCES)])
async def test_twenty_instances_fetch_once_per_period_only_in_shared_mode(
    redis_server: Any, redis_namespace: str, shared: bool, limit: int
) -> None:
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            registries = await _fleet(stack, redis_server.url, redis_namespace, shared=shared)
            await _cold_lookups(idp, registries)
            assert idp.request_count <= limit
            if not shared:
                assert idp.request_count == INSTANCES
            async with anyio.create_task_group() as tg:  # everyone refreshes again within the period
                for reg in registries:
                    tg.start_soon(reg.refresh, TENANT, PROVIDER)
            assert idp.request_count <= (limit if shared else 2 * INSTANCES)


async def test_rotation_announced_by_one_instance_reaches_every_instance(
    redis_server: Any, redis_namespace: str
) -> None:
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            registries = await _fleet(stack, redis_server.url, redis_namespace, shared=True, count=5)
            await _cold_lookups(idp, registries, unknown_kid_cooldown=0.0)
            before = idp.request_count
            new = idp.rotate()
            await anyio.sleep(0)
            await registries[0].get_key(TENANT, PROVIDER, new)  # unknown kid: one fleet-wide refresh
            with anyio.fail_after(2):  # "within a second": the notice reaches every instance
                while not all(_has(reg, new) for reg in registries):
                    await anyio.sleep(0.01)
            assert idp.request_count - before <= 1 + 1


def _has(reg: Registry, kid: str) -> bool:
    try:
        reg.get_key_nowait(TENANT, PROVIDER, kid)
    except Exception:
        return False
    return True


@coredis_outage
async def test_redis_outage_degrades_to_local_fetching_without_failed_lookups(
    disposable_redis: Any, redis_namespace: str
) -> None:
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            registries = await _fleet(stack, disposable_redis.url, redis_namespace, shared=True, count=3)
            await _cold_lookups(idp, registries, unknown_kid_cooldown=0.0)
            disposable_redis.stop()
            new = idp.rotate()
            for reg in registries:
                assert (await reg.get_key(TENANT, PROVIDER, new)).kid == new  # fetched locally
                assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
            disposable_redis.start()
            newest = idp.rotate()
            for reg in registries:
                assert (await reg.get_key(TENANT, PROVIDER, newest)).kid == newest


async def test_a_lease_holder_that_dies_mid_fetch_lets_another_instance_take_over(
    redis_server: Any, redis_namespace: str
) -> None:
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp:
            idp.stall(math.inf)
            async with loopback_registry(
                store=RedisStore(redis_server.url, namespace=redis_namespace, shared=True)
            ) as doomed:
                await doomed.register(config_for(idp, retry=QUICK_RETRY))
                await idp.wait_for_requests(1)  # it holds the lease and its fetch hangs
            idp.recover()  # the holder is gone without releasing the lease or publishing
            store = RedisStore(redis_server.url, namespace=redis_namespace, shared=True)
            async with loopback_registry(store=store) as survivor:
                await survivor.register(config_for(idp, retry=QUICK_RETRY))
                started = anyio.current_time()
                assert (await survivor.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
                assert anyio.current_time() - started < QUICK_RETRY.deadline + 1.0  # waited one deadline at most
            assert idp.request_count == 2


async def test_a_due_refresh_while_another_instance_holds_the_lease_waits_instead_of_spinning(
    redis_server: Any, redis_namespace: str
) -> None:
    clock = VirtualClock()
    retry = RetryPolicy(deadline=20.0)  # a 21 s lease: longer than the 15 s refresh interval
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            idp.cache_control = "max-age=30"
            registries = [
                await stack.enter_async_context(
                    loopback_registry(clock, store=RedisStore(redis_server.url, namespace=redis_namespace, shared=True))
                )
                for _ in range(3)
            ]
            await _cold_lookups(idp, registries, refresh_early=25.0, prefetch_jitter=0.0, retry=retry)
            assert idp.request_count == 1
            for _ in range(20):  # t = 0 .. 20: refreshes fall due at 15 s while the lease is held
                await clock.advance(1.0)
                await anyio.sleep(0.005)  # Redis round trips are real I/O the virtual clock does not track
            # deferred until the lease holder's set could be newer: no spinning, no counted refreshes
            assert all(reg.status(TENANT, PROVIDER).refreshes <= 1 for reg in registries)
            assert idp.request_count == 1
            assert all(reg.status(TENANT, PROVIDER).next_refresh is not None for reg in registries)


async def test_an_unknown_kid_sprayed_at_every_instance_costs_one_fleet_wide_refresh(
    redis_server: Any, redis_namespace: str
) -> None:
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            registries = await _fleet(stack, redis_server.url, redis_namespace, shared=True, count=4)
            await _cold_lookups(idp, registries, unknown_kid_cooldown=30.0)
            before = idp.request_count
            for reg in registries:
                with pytest.raises(KeyNotFoundError):
                    await reg.get_key(TENANT, PROVIDER, "bogus")
            assert idp.request_count - before == 1


class _DeafRedisStore(RedisStore):
    """A fleet member whose notices never arrive (a listener forever reconnecting): it must poll."""

    async def listen(self, on_notice: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()


async def _fleet_of(stack: AsyncExitStack, url: str, namespace: str, *, count: int, deaf: int = 0) -> list[Registry]:
    """``count`` registries sharing one Redis; the first ``deaf`` of them never hear a notice."""
    registries = []
    for index in range(count):
        kind = _DeafRedisStore if index < deaf else RedisStore
        # a Redis call timing out on a loaded machine means "fetch locally": give it room
        store = kind(url, namespace=namespace, shared=True, timeout=RELAXED_REDIS_TIMEOUT)
        registries.append(await stack.enter_async_context(loopback_registry(store=store)))
    return registries


async def _verify_everywhere_at_once(registries: list[Registry], tokens: list[str]) -> list[BaseException]:
    refused: list[BaseException] = []

    async def verify(reg: Registry, token: str) -> None:
        try:
            await reg.verify(token, tenant=TENANT, provider=PROVIDER)
        except JwksCacheError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for reg in registries:
            for token in tokens:
                tg.start_soon(verify, reg, token)
    return refused


@pytest.mark.parametrize("deaf", [0, 5], ids=["notices-heard", "notices-lost"])
async def test_a_rotated_key_is_accepted_by_every_instance_at_once_with_one_fleet_wide_fetch(
    redis_server: Any, redis_namespace: str, deaf: int
) -> None:
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            registries = await _fleet_of(stack, redis_server.url, redis_namespace, count=6, deaf=deaf)
            await _cold_lookups(idp, registries, unknown_kid_cooldown=30.0)
            before = idp.request_count
            new = idp.rotate()
            tokens = [idp.mint({"sub": f"user-{n}"}, kid=new) for n in range(5)]
            started = anyio.current_time()
            refused = await _verify_everywhere_at_once(registries, tokens)
            assert refused == []  # no instance refuses the new key because another one was fetching it
            assert idp.request_count - before <= 2
            # a lost notice costs a poll interval (plus the holder's fetch): neither a cooldown (30 s)
            # nor the wait's bound followed by fetches of their own (one 8 s retry deadline)
            assert anyio.current_time() - started < RetryPolicy().deadline / 2
            for reg in registries:  # and nothing was remembered as absent
                assert reg.get_key_nowait(TENANT, PROVIDER, new).kid == new


async def test_refresh_returns_with_a_set_newer_than_the_call_while_another_instance_holds_the_lease(
    redis_server: Any, redis_namespace: str
) -> None:
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            first, second = await _fleet_of(stack, redis_server.url, redis_namespace, count=2)
            await _cold_lookups(idp, [first])  # first holds the refresh lease for the period
            await second.register(config_for(idp))  # restored from the store: no fetch of its own
            assert idp.request_count == 1
            new = idp.rotate()
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.refresh, TENANT, PROVIDER)
                tg.start_soon(second.refresh, TENANT, PROVIDER)
            assert first.get_key_nowait(TENANT, PROVIDER, new).kid == new
            assert second.get_key_nowait(TENANT, PROVIDER, new).kid == new
            assert idp.request_count == 2  # one fetch serves both calls

            newest = idp.rotate()  # refresh() on the second instance alone: it fetches
            await second.refresh(TENANT, PROVIDER)
            assert second.get_key_nowait(TENANT, PROVIDER, newest).kid == newest
            assert idp.request_count == 3


@pytest.mark.parametrize("deaf", [0, 1], ids=["notices-heard", "notices-lost"])
async def test_refresh_adopts_the_fetch_another_instance_has_in_flight(
    redis_server: Any, redis_namespace: str, deaf: int
) -> None:
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, AsyncExitStack() as stack:
            waiter, fetcher = await _fleet_of(stack, redis_server.url, redis_namespace, count=2, deaf=deaf)
            await _cold_lookups(idp, [fetcher])
            await waiter.register(config_for(idp))
            new = idp.rotate()
            idp.stall(math.inf)
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetcher.refresh, TENANT, PROVIDER)
                with anyio.fail_after(RetryPolicy().deadline / 2):  # refresh() goes upstream now, not later
                    await idp.wait_for_requests(2)  # the fetcher's request hangs at the identity provider
                tg.start_soon(waiter.refresh, TENANT, PROVIDER)
                await anyio.sleep(0.05)  # the waiter finds the lease taken and waits for its holder
                idp.recover()
            assert waiter.get_key_nowait(TENANT, PROVIDER, new).kid == new
            assert idp.request_count == 2  # the waiter adopted the fetcher's set
