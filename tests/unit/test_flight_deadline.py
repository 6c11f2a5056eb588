"""The flight, not each waiter, enforces the fetch deadline; fleet follow-ups never hold waiters.

Pure logic with stand-ins for the refresher and the shared store (a hang is what is under test).
"""

from __future__ import annotations

import json
import random
from typing import Any

import anyio
from anyio.abc import TaskGroup

from jwks_cache import FetchError, ProviderConfig, RegistryClosedError, RetryPolicy
from jwks_cache._jose._jwks import parse_jwks
from jwks_cache._runtime._boundary import run_once
from jwks_cache._runtime._provider import Provider, ProviderHost
from jwks_cache._runtime._published import Published
from jwks_cache._runtime._scheduler import Scheduler
from jwks_cache.testing import VirtualClock

RETRY = RetryPolicy(max_retries=0, attempt_timeout=1.0, deadline=2.0)


def _provider(tg: TaskGroup, clock: VirtualClock, refresher: Any, fleet: Any = None) -> Provider:
    """A provider run by ``tg`` as a Registry would run it, with stand-ins for its refresher and store."""

    def spawn(func: Any, *args: Any, name: str, on_failure: Any) -> None:
        tg.start_soon(run_once, name, on_failure, func, *args, name=name)

    host = ProviderHost(
        clock=clock,
        rng=random.Random(0),
        spawn=spawn,
        scheduler=Scheduler(clock, max_flights=16),
        gone_error=lambda t, p: RegistryClosedError(f"{t}/{p} gone"),
        fleet=fleet,
    )
    config = ProviderConfig(tenant="acme", provider="idp", jwks_url=refresher.jwks_url, retry=RETRY)
    return Provider(config, refresher, host)


class _HangingRefresher:
    """Stands in for a fetch that ignores every bound below the flight's (the backstop under test)."""

    jwks_url = "https://idp.example/jwks"

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, current: Any, *, conditional: bool, background: bool = False) -> Any:
        self.calls += 1
        await anyio.sleep_forever()


async def test_a_flight_overrunning_its_deadline_releases_every_waiter_with_fetch_error() -> None:
    clock = VirtualClock()
    refresher = _HangingRefresher()
    outcomes: list[BaseException] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            provider = _provider(tg, clock, refresher)

            async def waiter() -> None:
                try:
                    await provider.table()
                except FetchError as exc:
                    outcomes.append(exc)

            async with anyio.create_task_group() as waiters:
                for _ in range(50):
                    waiters.start_soon(waiter)
                await clock.settle()
                assert refresher.calls == 1 and outcomes == []
                await clock.advance(RETRY.deadline + 0.5)  # inside the budget: still waiting
                assert outcomes == []
                await clock.advance(1.0)  # the budget is one deadline plus a second's margin
            assert len(outcomes) == 50
            assert "overran its deadline" in str(outcomes[0])
            assert provider.flight is None and provider.error_count == 1
            tg.cancel_scope.cancel()


class _QuickRefresher:
    jwks_url = "https://idp.example/jwks"

    async def fetch(self, current: Any, *, conditional: bool, background: bool = False) -> Published:
        body = json.dumps(
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
        ).encode()
        return Published(
            table=parse_jwks(body, url=self.jwks_url),
            url=self.jwks_url,
            fetched_mono=1000.0,
            ttl=300.0,
            stale_while_error=60.0,
            wall_fetched_at=1_800_000_000.0,
            etag=None,
            last_modified=None,
            no_store=False,
        )


class _HangingFleet:
    """A shared store whose publish never returns (a Redis that stopped answering)."""

    shared = True

    def __init__(self) -> None:
        self.published = 0

    async def adopt_or_lease(self, provider: Any, **_: Any) -> None:
        return None  # we hold the lease: fetch upstream

    async def after_upstream_fetch(self, provider: Any, published: Any) -> None:
        self.published += 1
        await anyio.sleep_forever()


async def test_waiters_get_the_fetched_set_before_a_hanging_store_is_told_and_the_flight_still_ends() -> None:
    clock = VirtualClock()
    fleet = _HangingFleet()
    got: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            provider = _provider(tg, clock, _QuickRefresher(), fleet)

            async def waiter() -> None:
                table = await provider.table()
                got.append(table.key_ids[0])

            async with anyio.create_task_group() as waiters:
                for _ in range(10):
                    waiters.start_soon(waiter)
            assert got == ["k"] * 10  # released while the store still hangs
            assert fleet.published == 1 and provider.counts.refreshes == 1 and provider.error_count == 0
            await clock.advance(RETRY.deadline + 0.1)  # the follow-up's own bound
            await clock.settle()
            assert [t.name for t in anyio.get_running_tasks() if t.name.startswith("jwks-cache fetch")] == []
            tg.cancel_scope.cancel()


class _FirstQuickThenHanging(_QuickRefresher):
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, current: Any, *, conditional: bool, background: bool = False) -> Published:
        self.calls += 1
        if self.calls > 1:
            await anyio.sleep_forever()
        return await super().fetch(current, conditional=conditional)


async def test_closing_cancels_a_fleet_follow_up_and_a_later_flight_alike() -> None:
    clock = VirtualClock()
    refresher = _FirstQuickThenHanging()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            provider = _provider(tg, clock, refresher, _HangingFleet())
            await provider.table()  # flight A: its waiters are released, its publish to the store hangs
            provider.start_flight(conditional=False)  # flight B, hanging upstream, overlaps A's follow-up
            await clock.settle()
            assert len(_fetch_tasks()) == 2
            provider.close()  # an unregister: neither may go on (A would publish an off-boarded tenant)
            await clock.settle()
            assert _fetch_tasks() == []
            tg.cancel_scope.cancel()


def _fetch_tasks() -> list[str]:
    return [t.name for t in anyio.get_running_tasks() if t.name.startswith("jwks-cache fetch")]
