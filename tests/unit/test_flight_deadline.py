"""The flight, not each waiter, enforces the fetch deadline (pure logic: a refresher stand-in that hangs)."""

from __future__ import annotations

import random
from typing import Any

import anyio

from jwks_cache import FetchError, ProviderConfig, RegistryClosedError, RetryPolicy
from jwks_cache._provider import Provider, ProviderHost
from jwks_cache._scheduler import Scheduler
from jwks_cache.testing import VirtualClock

RETRY = RetryPolicy(max_retries=0, attempt_timeout=1.0, deadline=2.0)


class _HangingRefresher:
    """Stands in for a fetch that ignores every bound below the flight's (the backstop under test)."""

    jwks_url = "https://idp.example/jwks"

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, current: Any, *, conditional: bool, priority: Any = None) -> Any:
        self.calls += 1
        await anyio.sleep_forever()


async def test_a_flight_overrunning_its_deadline_releases_every_waiter_with_fetch_error() -> None:
    clock = VirtualClock()
    refresher = _HangingRefresher()
    outcomes: list[BaseException] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            def spawn(func: Any, *args: Any, name: str) -> None:
                tg.start_soon(func, *args, name=name)

            host = ProviderHost(
                clock=clock,
                rng=random.Random(0),
                spawn=spawn,
                scheduler=Scheduler(clock),
                gone_error=lambda t, p: RegistryClosedError(f"{t}/{p} gone"),
            )
            config = ProviderConfig(tenant="acme", provider="idp", jwks_url=refresher.jwks_url, retry=RETRY)
            provider = Provider(config, refresher, host)  # type: ignore[arg-type]

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
