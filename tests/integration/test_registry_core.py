"""The core cache against a real loopback identity provider: counts of upstream requests and errors."""

from __future__ import annotations

import math
import random
from typing import Any

import anyio
import httpx
import pytest
from tests.helpers import (
    PROVIDER,
    QUICK_RETRY,
    TENANT,
    config_for,
    eventually,
    failed_lookups,
    loopback_registry,
)

from jwks_cache import (
    ConfigError,
    FetchError,
    KeyNotFoundError,
    NotRegisteredError,
    ProviderState,
    Registry,
    RegistryClosedError,
    RetryPolicy,
    TokenError,
)
from jwks_cache._http._transport import guarded_client
from jwks_cache.testing import LocalIdentityProvider, VirtualClock


async def test_thousand_concurrent_cold_callers_share_one_upstream_request() -> None:
    results: list[str] = []
    with anyio.fail_after(30):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp))
            kid = idp.kids[0]

            async def caller() -> None:
                key = await reg.get_key(TENANT, PROVIDER, kid)
                results.append(key.kid)

            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(caller)
            assert idp.request_count == 1
            assert results == [kid] * 1000
            assert reg.status(TENANT, PROVIDER).state is ProviderState.READY


async def test_cancelled_waiters_do_not_cancel_the_shared_fetch() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            idp.stall(math.inf)
            await reg.register(config_for(idp))
            kid = idp.kids[0]
            got: list[str] = []
            scopes = [anyio.CancelScope() for _ in range(100)]

            async def caller(scope: anyio.CancelScope) -> None:
                with scope:
                    got.append((await reg.get_key(TENANT, PROVIDER, kid)).kid)

            async with anyio.create_task_group() as tg:
                for scope in scopes:
                    tg.start_soon(caller, scope)
                await idp.wait_for_requests(1)
                await anyio.wait_all_tasks_blocked()
                for scope in scopes[::2]:
                    scope.cancel()
                await anyio.wait_all_tasks_blocked()
                idp.recover()
            assert got == [kid] * 50
            assert idp.request_count == 1
            assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid


async def test_register_does_no_io_and_the_loop_fetches_first() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            assert idp.request_count == 0
            await clock.settle()
            assert idp.request_count == 1
            assert reg.status(TENANT, PROVIDER).key_ids == tuple(idp.kids)


async def test_refresh_revalidates_with_etag_and_a_304_keeps_the_keys() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=300"
            await reg.register(config_for(idp, prefetch_jitter=0.0))
            kid = idp.kids[0]
            first = await reg.get_key(TENANT, PROVIDER, kid)
            etag = idp.requests[-1]
            assert "if-none-match" not in etag.headers
            await clock.advance(270.5)  # 300 - refresh_early 30
            assert idp.request_count == 2
            revalidation = idp.requests[-1].headers
            assert revalidation.get("if-none-match", "").startswith('"')
            assert "if-modified-since" in revalidation
            status = reg.status(TENANT, PROVIDER)
            assert status.refreshes == 2 and status.error_count == 0
            assert reg.get_key_nowait(TENANT, PROVIDER, kid) is first  # same objects: the 304 kept the set
            assert status.expires_at is not None and status.last_refresh is not None
            assert (status.expires_at - status.last_refresh).total_seconds() == pytest.approx(300)


@pytest.mark.parametrize(
    ("cache_control", "expected_ttl"),
    [("max-age=5", 30.0), ("max-age=600", 600.0), ("max-age=999999", 86400.0), ("no-store", 30.0), (None, 300.0)],
)
async def test_ttl_comes_from_cache_control_and_is_clamped(cache_control: str | None, expected_ttl: float) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = cache_control
            idp.last_modified_enabled = False  # else heuristic freshness (10% of its age) applies
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            status = reg.status(TENANT, PROVIDER)
            assert status.expires_at is not None and status.last_refresh is not None
            assert (status.expires_at - status.last_refresh).total_seconds() == pytest.approx(expected_ttl)


async def test_age_header_is_subtracted_from_max_age() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=600"
            idp.extra_headers = {"Age": "200"}
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            status = reg.status(TENANT, PROVIDER)
            assert status.expires_at is not None and status.last_refresh is not None
            assert (status.expires_at - status.last_refresh).total_seconds() == pytest.approx(400)


@pytest.mark.parametrize("seed", range(5))
async def test_refresh_is_scheduled_early_with_bounded_jitter(seed: int) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock, rng=random.Random(seed)) as reg:
            idp.cache_control = "max-age=300"
            await reg.register(config_for(idp, refresh_early=30.0, prefetch_jitter=5.0))
            await reg.refresh(TENANT, PROVIDER)
            status = reg.status(TENANT, PROVIDER)
            assert status.next_refresh is not None and status.last_refresh is not None
            lead = (status.next_refresh - status.last_refresh).total_seconds()
            assert 265.0 <= lead <= 270.0
            await clock.advance(264.9)
            assert idp.request_count == 1
            await clock.advance(5.2)
            assert idp.request_count == 2


async def test_short_ttl_never_refreshes_more_often_than_half_min_ttl() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=0"
            await reg.register(config_for(idp, refresh_early=60.0, max_ttl=120.0))
            await clock.settle()
            for _ in range(10):
                await clock.advance(5.0)
            assert idp.request_count == 4  # t=0, 15, 30, 45: every min_ttl/2, no storm


async def test_outage_serves_stale_keys_then_fails_closed() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        # seeded: the backoff jitter decides whether a retry is mid-flight (REFRESHING) at t=61
        async with LocalIdentityProvider() as idp, loopback_registry(clock, rng=random.Random(3)) as reg:
            idp.cache_control = "max-age=60"
            await reg.register(config_for(idp, stale_while_error=60.0, prefetch_jitter=0.0))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            idp.fail(503)
            await clock.advance(61.0)  # past expiry; refreshes keep failing
            assert reg.status(TENANT, PROVIDER).state in (ProviderState.STALE, ProviderState.REFRESHING)
            assert reg.status(TENANT, PROVIDER).error_count >= 1
            assert (await reg.get_key(TENANT, PROVIDER, kid)).kid == kid
            assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid
            status = reg.status(TENANT, PROVIDER)
            assert status.stale_serves == 2
            assert status.error_count >= 1 and status.last_error is not None and "503" in status.last_error
            await clock.advance(60.0)  # past expiry + stale_while_error
            with pytest.raises(FetchError):
                await reg.get_key(TENANT, PROVIDER, kid)
            with pytest.raises(KeyNotFoundError):
                reg.get_key_nowait(TENANT, PROVIDER, kid)
            assert reg.status(TENANT, PROVIDER).state is ProviderState.FAILED
            idp.recover()
            await clock.advance(20.0)  # the loop's backoff is capped at min_ttl / 2
            assert (await reg.get_key(TENANT, PROVIDER, kid)).kid == kid
            assert reg.status(TENANT, PROVIDER).error_count == 0


async def test_failed_refresh_never_replaces_a_good_set() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            before = await reg.resolve(TENANT, PROVIDER)
            for body in (b"<html>oops</html>", b'{"keys": []}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'):
                idp.set_body(body)
                with pytest.raises(FetchError):
                    await reg.refresh(TENANT, PROVIDER)
            after = await reg.resolve(TENANT, PROVIDER)
            assert [k.kid for k in after.keys] == [k.kid for k in before.keys] == idp.kids


@pytest.mark.parametrize(
    ("status", "headers", "expected_requests"),
    [
        (500, {}, 3),
        (503, {}, 3),
        (502, {}, 3),
        (408, {}, 3),
        (429, {}, 3),
        (404, {}, 1),
        (403, {}, 1),
        (401, {}, 1),
        (429, {"Retry-After": "3600"}, 1),  # beyond the 8 s deadline: give up at once
    ],
)
async def test_only_transient_failures_are_retried(
    status: int, headers: dict[str, str], expected_requests: int
) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.fail(status, headers=headers)
            await reg.register(config_for(idp))
            seen: list[int] = []
            async with anyio.create_task_group() as tg:

                async def cold() -> None:
                    with pytest.raises(FetchError) as info:
                        await reg.get_key(TENANT, PROVIDER, "any")
                    assert info.value.status == status
                    seen.append(idp.request_count)  # requests made by the one refresh the caller waited on

                tg.start_soon(cold)
                while not seen:
                    await clock.advance(0.1)  # walks through the backoff sleeps
            assert seen == [expected_requests]


async def test_retry_after_is_honoured_within_the_deadline() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.fail(429, times=1, headers={"Retry-After": "3"})
            await reg.register(config_for(idp))
            got: list[str] = []
            async with anyio.create_task_group() as tg:

                async def cold() -> None:
                    got.append((await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid)

                tg.start_soon(cold)
                await clock.advance(2.9)
                assert idp.request_count == 1  # still waiting out Retry-After
                await clock.advance(0.2)
            assert idp.request_count == 2
            assert got == [idp.kids[0]]


async def test_unknown_kid_flood_costs_at_most_one_request_per_cooldown() -> None:
    clock = VirtualClock()
    rng = random.Random(7)
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=3600"
            await reg.register(config_for(idp, unknown_kid_cooldown=30.0))
            known = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, known)
            rejected = 0
            for second in range(90):
                for _ in range(11):
                    with pytest.raises(KeyNotFoundError):
                        await reg.get_key(TENANT, PROVIDER, f"bogus-{rng.getrandbits(64):x}")
                    rejected += 1
                assert (await reg.get_key(TENANT, PROVIDER, known)).kid == known
                await clock.advance(1.0)
                assert idp.request_count <= 1 + (second // 30) + 1
            assert rejected == 990
            assert idp.request_count <= 4  # the first fetch plus one per 30 s cooldown over 90 s


async def test_rotation_is_picked_up_by_an_unknown_kid_with_an_unconditional_refresh() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=3600"
            await reg.register(config_for(idp))
            old = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, old)
            new = idp.rotate()
            assert (await reg.get_key(TENANT, PROVIDER, new)).kid == new
            assert idp.request_count == 2
            assert "if-none-match" not in idp.requests[-1].headers  # a CDN stuck on 304 cannot hide rotation
            with pytest.raises(KeyNotFoundError):
                reg.get_key_nowait(TENANT, PROVIDER, old)  # keys absent upstream disappear


async def test_each_lookup_counts_once_and_failed_ones_count_as_misses() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp, retry=QUICK_RETRY))
            idp.fail(503)
            errors = await failed_lookups(reg, clock, idp.kids[0], steps=20)
            assert len(errors) == 1  # no usable set at all: a miss, not an uncounted call
            assert (reg.status(TENANT, PROVIDER).hits, reg.status(TENANT, PROVIDER).misses) == (0, 1)
            idp.recover()
            await reg.refresh(TENANT, PROVIDER)
            header, payload, signature = idp.mint({"sub": "alice"}).split(".")
            forged = f"{header}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
            before = idp.request_count
            with pytest.raises(TokenError) as info:  # a bad signature: one refresh, one retry, one lookup
                await reg.verify(forged, tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "bad_signature"
            assert idp.request_count == before + 1
            status = reg.status(TENANT, PROVIDER)
            assert (status.hits, status.misses) == (1, 1)
            await clock.advance(31)  # past the unknown-kid cooldown the bad signature used
            new_kid = idp.rotate()
            claims = await reg.verify(idp.mint({"sub": "bob"}, kid=new_kid), tenant=TENANT, provider=PROVIDER)
            assert claims["sub"] == "bob"  # its kid found by an unknown-kid refresh: a hit, as get_key counts it
            status = reg.status(TENANT, PROVIDER)
            assert (status.hits, status.misses) == (2, 1)


async def test_an_absent_kid_is_remembered_and_costs_nothing_within_the_cooldown() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp, unknown_kid_cooldown=30.0))
            await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            for _ in range(3):
                with pytest.raises(KeyNotFoundError):
                    await reg.get_key(TENANT, PROVIDER, "ghost")
            assert idp.request_count == 2
            status = reg.status(TENANT, PROVIDER)
            assert status.misses == 3


async def test_reregister_and_unregister_leak_no_tasks_and_keep_keys_for_the_same_url() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            await clock.settle()
            baseline = len(anyio.get_running_tasks())
            for _ in range(20):
                await reg.register(config_for(idp, refresh_early=45.0))
                await clock.settle()
            assert len(anyio.get_running_tasks()) == baseline
            assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid
            assert idp.request_count == 1  # the same URL: keys kept, nothing refetched
            assert await reg.unregister(TENANT, PROVIDER) is True
            await clock.settle()
            assert len(anyio.get_running_tasks()) == baseline  # providers own no tasks between flights
            assert await reg.unregister(TENANT, PROVIDER) is False
            with pytest.raises(NotRegisteredError):
                await reg.get_key(TENANT, PROVIDER, kid)
            with pytest.raises(NotRegisteredError):
                reg.status(TENANT, PROVIDER)


async def test_callers_waiting_on_a_cold_fetch_carry_on_when_the_registration_is_replaced() -> None:
    """A config reload during a cold stampede: the tenant is still registered, so nobody gets an error."""
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp))
            idp.stall(math.inf)
            kids: list[str] = []
            claims: list[dict[str, object]] = []
            token = idp.mint({"sub": "alice"})

            async def caller() -> None:
                kids.append((await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid)

            async def verifier() -> None:
                claims.append(await reg.verify(token, tenant=TENANT, provider=PROVIDER))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(caller)
                tg.start_soon(verifier)
                tg.start_soon(reg.resolve, TENANT, PROVIDER)
                await idp.wait_for_requests(1)
                await anyio.wait_all_tasks_blocked()
                await reg.register(config_for(idp))  # the same registration, reloaded
                await idp.wait_for_requests(2)  # the replaced fetch was cancelled; the successor's runs
                idp.recover()
            assert kids == [idp.kids[0]] * 5
            assert [c["sub"] for c in claims] == ["alice"]
            assert idp.request_count == 2


async def test_a_reregistration_with_a_tighter_max_ttl_applies_it_to_the_kept_keys() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=3600"
            await reg.register(config_for(idp, max_ttl=3600.0, refresh_early=10.0, prefetch_jitter=0.0))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            await reg.register(config_for(idp, max_ttl=60.0, refresh_early=10.0, prefetch_jitter=0.0))
            assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid  # kept: the same source
            expires_at = reg.status(TENANT, PROVIDER).expires_at
            assert expires_at is not None and expires_at.timestamp() == pytest.approx(clock.time() + 60, abs=1)
            await clock.advance(55)
            assert idp.request_count == 2  # refreshed within the new minute, not after the old hour


async def test_a_reregistration_under_other_transport_rules_fetches_the_keys_again() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            await reg.register(config_for(idp, allowed_domains=("127.0.0.1",)))
            with pytest.raises(KeyNotFoundError):
                reg.get_key_nowait(TENANT, PROVIDER, kid)  # fetched under the old rules: not kept
            assert (await reg.get_key(TENANT, PROVIDER, kid)).kid == kid
            assert idp.request_count == 2


async def test_leaving_the_block_with_a_stalled_upstream_is_prompt_and_releases_waiters() -> None:
    errors: list[BaseException] = []
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp:
            idp.stall(math.inf)
            started = anyio.current_time()
            async with anyio.create_task_group() as outside, loopback_registry() as reg:
                await reg.register(config_for(idp))

                async def waiter() -> None:
                    try:
                        await reg.get_key(TENANT, PROVIDER, "k")
                    except RegistryClosedError as exc:
                        errors.append(exc)

                outside.start_soon(waiter)
                await idp.wait_for_requests(1)
            assert anyio.current_time() - started < 1.0
            assert len(errors) == 1


async def test_every_method_raises_registry_closed_after_exit() -> None:
    async with LocalIdentityProvider() as idp:
        reg = loopback_registry()
        with pytest.raises(RegistryClosedError):
            await reg.register(config_for(idp))
        async with reg:
            await reg.register(config_for(idp))
        with pytest.raises(RegistryClosedError):
            await reg.get_key(TENANT, PROVIDER, "k")
        with pytest.raises(RegistryClosedError):
            reg.get_key_nowait(TENANT, PROVIDER, "k")
        with pytest.raises(RegistryClosedError):
            await reg.register(config_for(idp))
        with pytest.raises(RegistryClosedError):
            reg.statuses()
        with pytest.raises(RegistryClosedError):
            await reg.__aenter__()


async def test_caller_exception_comes_out_unwrapped() -> None:
    async with LocalIdentityProvider() as idp:
        with pytest.raises(LookupError, match="mine"):  # noqa: PT012
            async with loopback_registry() as reg:
                await reg.register(config_for(idp))
                raise LookupError("mine")


async def test_cold_fetch_failure_reaches_every_waiter_as_its_error_not_a_timeout() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.fail(404)
            await reg.register(config_for(idp))
            errors: list[BaseException] = []

            async def caller() -> None:
                try:
                    await reg.get_key(TENANT, PROVIDER, "k")
                except FetchError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(caller)
            assert len(errors) == 10 and len({id(e) for e in errors}) == 10
            assert all(e.status == 404 for e in errors)  # type: ignore[attr-defined]
            assert idp.request_count == 1


async def test_negative_cache_makes_cold_lookups_fail_fast_after_a_failure() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.fail(404)
            await reg.register(config_for(idp, negative_cache_ttl=10.0))
            for _ in range(5):
                with pytest.raises(FetchError):
                    await reg.get_key(TENANT, PROVIDER, "k")
            assert idp.request_count == 1
            idp.recover()
            await clock.advance(10.5)
            await eventually(lambda: idp.request_count >= 2, clock=clock)
            assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]


def _library_tasks() -> list[str]:
    return [t.name for t in anyio.get_running_tasks() if t.name.startswith("jwks-cache")]


async def test_idle_providers_cost_no_tasks_and_unregister_cancels_a_flight_in_progress() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            for i in range(50):
                await reg.register(config_for(idp, tenant=f"t{i}"))
            await clock.settle()
            assert idp.request_count == 50
            assert _library_tasks() == ["jwks-cache scheduler"]  # not one task per provider
            idp.stall(math.inf)
            await reg.register(config_for(idp, tenant="stalled"))
            await idp.wait_for_requests(51)
            assert sorted(_library_tasks()) == ["jwks-cache fetch stalled/idp", "jwks-cache scheduler"]
            assert await reg.unregister("stalled", PROVIDER)
            await anyio.wait_all_tasks_blocked()
            assert _library_tasks() == ["jwks-cache scheduler"]
            idp.recover()


async def test_concurrent_registrations_of_one_provider_leave_exactly_one_running() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            async with anyio.create_task_group() as tg:
                for early in (31.0, 32.0, 33.0):
                    tg.start_soon(reg.register, config_for(idp, refresh_early=early))
            await clock.settle()
            assert len(reg.statuses()) == 1
            assert reg.registration(TENANT, PROVIDER).refresh_early in (31.0, 32.0, 33.0)
            await clock.advance(3600)
            assert idp.request_count <= 1 + 3600 // 270 + 1  # one provider's schedule, not three


async def test_a_callers_own_exception_group_comes_out_as_itself() -> None:
    async with LocalIdentityProvider() as idp:
        with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
            async with loopback_registry() as reg:
                await reg.register(config_for(idp))
                raise ExceptionGroup("mine", [KeyError("a"), KeyError("b")])
        assert info.value.message == "mine"


async def test_background_refreshes_send_sixteen_requests_at_a_time_and_a_cold_caller_never_queues() -> None:
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            idp.stall(math.inf)
            # a query per tenant tells the requests apart
            await reg.register_many(
                config_for(idp, tenant=f"t{i}", jwks_url=f"{idp.jwks_url}?t={i}") for i in range(40)
            )
            await idp.wait_for_requests(16)
            await anyio.wait_all_tasks_blocked()
            assert idp.request_count == 16  # the other 24 wait in the scheduler's heap, not as tasks
            assert len(_library_tasks()) == 1 + 16  # the scheduler and sixteen flights
            sent = {r.query for r in idp.requests}
            queued = next(i for i in range(40) if f"t={i}" not in sent)
            got: list[str] = []

            async def cold_caller() -> None:
                got.append((await reg.get_key(f"t{queued}", PROVIDER, idp.kids[0])).kid)

            async with anyio.create_task_group() as tg:
                tg.start_soon(cold_caller)  # its provider waits in the heap: the caller fetches for itself
                await idp.wait_for_requests(17)  # at once, beside the sixteen
                await anyio.wait_all_tasks_blocked()
                assert idp.request_count == 17
                assert idp.requests[-1].query == f"t={queued}"
                idp.recover()
            assert got == [idp.kids[0]]
            await eventually(lambda: all(s.key_ids for s in reg.statuses()))
            assert idp.request_count == 40  # every provider fetched once
            stats = reg.runtime_stats()  # every slot given back
            assert stats.fetches_in_flight == stats.background_fetches_in_flight == stats.background_refreshes == 0


async def test_max_concurrent_fetches_sets_the_background_share_and_callers_keep_their_own() -> None:
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, loopback_registry(max_concurrent_fetches=6) as reg:
            idp.stall(math.inf)
            await reg.register_many(
                config_for(idp, tenant=f"t{i}", jwks_url=f"{idp.jwks_url}?t={i}") for i in range(10)
            )
            await idp.wait_for_requests(3)
            await anyio.wait_all_tasks_blocked()
            assert idp.request_count == 3  # half of six for refreshes; the rest wait in the heap
            sent = {r.query for r in idp.requests}
            queued = [i for i in range(10) if f"t={i}" not in sent][:3]
            async with anyio.create_task_group() as tg:
                for i in queued:  # three callers fetch for themselves, beside the three refreshes
                    tg.start_soon(reg.get_key, f"t{i}", PROVIDER, idp.kids[0])
                await idp.wait_for_requests(6)
                await anyio.wait_all_tasks_blocked()
                assert idp.request_count == 6
                idp.recover()
            await eventually(lambda: all(s.key_ids for s in reg.statuses()))
            assert idp.request_count == 10


async def test_the_registrys_own_client_pools_as_many_connections_as_it_sends_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # otherwise requests past the pool's 100 would wait inside httpcore, where no timeout of ours runs
    made: list[httpx.AsyncClient] = []

    def recording_guarded_client(**kwargs: Any) -> httpx.AsyncClient:
        made.append(guarded_client(**kwargs))
        return made[-1]

    monkeypatch.setattr("jwks_cache._runtime._registry.guarded_client", recording_guarded_client)
    async with loopback_registry(max_concurrent_fetches=300) as reg:
        [client] = made
        assert client._transport._pool._max_connections == 300  # type: ignore[attr-defined]
        stats = reg.runtime_stats()
        assert (stats.fetch_slots, stats.background_slots) == (300, 150)


@pytest.mark.parametrize("value", [0, 1, 1025, 2.0, True, "32"])
def test_max_concurrent_fetches_out_of_range_is_a_config_error_naming_it(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^max_concurrent_fetches: must be an integer from 2 to 1024"):
        Registry(max_concurrent_fetches=value)  # type: ignore[arg-type]


async def test_unregistering_during_a_background_refresh_frees_its_scheduler_slot() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            idp.stall(math.inf)
            await reg.register_many(config_for(idp, tenant=f"t{i}") for i in range(3))
            await idp.wait_for_requests(3)
            assert reg.runtime_stats().background_refreshes == 3
            assert await reg.unregister("t0", PROVIDER)
            await reg.register(config_for(idp, tenant="t1", min_ttl=60.0))
            await eventually(lambda: reg.runtime_stats().background_refreshes == 2)  # t0's back; t1's replaced
            idp.recover()
            await eventually(
                lambda: reg.runtime_stats().background_refreshes == 0 and all(s.key_ids for s in reg.statuses())
            )


async def test_register_many_installs_a_batch_with_one_scheduling_point() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            turns = 0
            done = anyio.Event()

            async def bystander() -> None:
                nonlocal turns
                while not done.is_set():
                    turns += 1
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                tg.start_soon(bystander)
                await anyio.lowlevel.checkpoint()
                before = turns
                await reg.register_many(config_for(idp, tenant=f"t{i}") for i in range(100))
                batch_turns = turns - before
                before = turns
                for i in range(100, 110):
                    await reg.register(config_for(idp, tenant=f"t{i}"))
                single_turns = turns - before
                done.set()
            assert batch_turns <= 2 and single_turns >= 5  # register() yields per call (10), the batch once
            await clock.settle()
            assert idp.request_count == 110
            assert (await reg.get_key("t42", PROVIDER, idp.kids[0])).kid == idp.kids[0]


async def test_register_many_refuses_the_whole_batch_naming_the_bad_registration() -> None:
    async with LocalIdentityProvider() as idp, loopback_registry(allowed_domains=["127.0.0.1"]) as reg:
        batch = [config_for(idp, tenant="a"), config_for(idp, tenant="b", allowed_domains=("idp.example",))]
        with pytest.raises(ConfigError, match=r"^b/idp: allowed_domains: 'idp.example' is outside"):
            await reg.register_many(batch)
        assert reg.statuses() == []
        await anyio.lowlevel.checkpoint()
        assert idp.request_count == 0


async def test_request_refresh_returns_at_once_and_status_counts_the_304() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            assert reg.status(TENANT, PROVIDER).revalidations == 0
            idp.stall(math.inf)
            reg.request_refresh(TENANT, PROVIDER)  # returns at once although the IdP stalls
            reg.request_refresh(TENANT, PROVIDER)  # leaves the one in flight
            await idp.wait_for_requests(2)
            assert reg.status(TENANT, PROVIDER).state is ProviderState.REFRESHING
            idp.recover()
            await eventually(lambda: reg.status(TENANT, PROVIDER).revalidations == 1, clock=clock)
            assert idp.request_count == 2
            assert idp.requests[-1].headers.get("if-none-match") is not None
            status = reg.status(TENANT, PROVIDER)
            assert (status.refreshes, status.state) == (2, ProviderState.READY)
            with pytest.raises(NotRegisteredError):
                reg.request_refresh("nobody", PROVIDER)


async def test_stalling_identity_providers_never_make_other_tenants_fail() -> None:
    """Real time: the stalled requests outlast the test (30 s attempts) until the IdP recovers, so
    however slowly a loaded machine runs the callers, every stalled refresh is still in flight."""
    patient = RetryPolicy(max_retries=0, attempt_timeout=30.0, deadline=30.0)
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as down, LocalIdentityProvider() as up, loopback_registry() as reg:
            down.stall(math.inf)
            batch = [config_for(down, tenant=f"down{i}", retry=patient) for i in range(20)]
            batch += [config_for(up, tenant=f"up{i}", retry=QUICK_RETRY) for i in range(5)]
            await reg.register_many(batch)  # the twenty stalled ones first
            await down.wait_for_requests(16)
            # every background slot is held by a stalled refresh, yet callers are never queued behind them
            keys = [await reg.get_key(f"up{i}", PROVIDER, up.kids[0]) for i in range(5)]
            assert [k.kid for k in keys] == [up.kids[0]] * 5
            states = {reg.status(f"down{i}", PROVIDER).state for i in range(20)}
            assert states <= {ProviderState.LOADING, ProviderState.EMPTY}  # still trying, or due in the heap
            down.recover()
            await eventually(lambda: all(s.key_ids for s in reg.statuses()))
            # and no healthy tenant ever recorded a failure the stalled ones caused
            assert all(reg.status(f"up{i}", PROVIDER).refresh_errors == 0 for i in range(5))


async def test_reregistering_twenty_thousand_times_leaves_one_scheduler_entry() -> None:
    """Each re-registration replaced the heap entry of the one before; they stayed until due, a day later."""
    clock = VirtualClock()
    with anyio.fail_after(60):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=86400"
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await clock.settle()
            for _ in range(20_000):
                await reg.register(config_for(idp))  # the same URL: the keys are kept, no fetch
            assert reg.runtime_stats().scheduled_wakeups == 1
            assert idp.request_count == 1
            assert await reg.unregister(TENANT, PROVIDER)
            assert reg.runtime_stats().scheduled_wakeups == 0


async def test_warm_waits_for_every_providers_keys_and_reports_those_that_stayed_cold() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as up, LocalIdentityProvider() as down, loopback_registry(clock) as reg:
            down.stall(math.inf)
            await reg.register_many(
                [config_for(up, tenant=f"up{i}") for i in range(3)]
                + [config_for(down, tenant="down", retry=QUICK_RETRY)]
            )
            async with anyio.create_task_group() as tg:
                cold: list[Any] = []

                async def warm() -> None:
                    cold.extend(await reg.warm(max_wait=5.0))

                tg.start_soon(warm)
                await up.wait_for_requests(1)
                await clock.advance(5.0)  # the stalled one is still fetching when the wait ends
            assert [s.tenant for s in cold] == ["down"]
            assert all(reg.get_key_nowait(f"up{i}", PROVIDER, up.kids[0]) for i in range(3))
            assert up.request_count == 3  # one fetch per provider: warm() joins the first fetches in flight
            down.recover()
            for _ in range(20):  # the loop retries with its backoff, in virtual time
                if reg.status("down", PROVIDER).key_ids:
                    break
                await clock.advance(5.0)
            assert await reg.warm(max_wait=0.0) == []
            with pytest.raises(ConfigError, match="max_wait"):
                await reg.warm(max_wait=math.inf)


async def test_verify_nowait_answers_as_verify_from_fresh_keys_and_defers_whatever_needs_io() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            await reg.register(config_for(idp))
            good = idp.mint({"sub": "a"})
            with pytest.raises(KeyNotFoundError, match="would fetch"):
                reg.verify_nowait(good, tenant=TENANT, provider=PROVIDER)  # cold: verify would fetch
            assert idp.request_count == 0  # ... and nowait did not
            assert await reg.verify(good, tenant=TENANT, provider=PROVIDER) == reg.verify_nowait(
                good, tenant=TENANT, provider=PROVIDER
            )
            with pytest.raises(TokenError) as expired:
                reg.verify_nowait(idp.mint({"sub": "a", "exp": 1}), tenant=TENANT, provider=PROVIDER)
            assert expired.value.reason == "expired"
            header, payload, signature = good.split(".")
            forged = f"{header}.{payload}.{signature[:-4]}AAAA"
            with pytest.raises(KeyNotFoundError, match="refresh"):  # verify may refresh once for it
                reg.verify_nowait(forged, tenant=TENANT, provider=PROVIDER)
            with pytest.raises(TokenError):
                await reg.verify(forged, tenant=TENANT, provider=PROVIDER)  # ... and so it did
            requests = idp.request_count
            with pytest.raises(TokenError) as bad:  # within the cooldown verify would not: final
                reg.verify_nowait(forged, tenant=TENANT, provider=PROVIDER)
            assert bad.value.reason == "bad_signature"
            assert idp.request_count == requests
            new_kid = idp.add_key()
            with pytest.raises(KeyNotFoundError):  # a kid the set lacks: verify would refresh for it
                reg.verify_nowait(idp.mint({"sub": "b"}, kid=new_kid), tenant=TENANT, provider=PROVIDER)
            idp.fail(503)
            await clock.advance(301)  # refreshes fail and the set expires: nowait takes fresh keys only
            with pytest.raises(KeyNotFoundError):
                reg.verify_nowait(good, tenant=TENANT, provider=PROVIDER)
            assert (await reg.verify(good, tenant=TENANT, provider=PROVIDER))["sub"] == "a"  # stale-window keys
