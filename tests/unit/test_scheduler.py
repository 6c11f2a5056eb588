"""The scheduler's own rules, with stand-in providers (pure logic: no fetch is under test)."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel

from jwks_cache import RegistryClosedError
from jwks_cache._runtime._scheduler import Scheduler
from jwks_cache.testing import VirtualClock


class _Due:
    """A provider whose refresh is due now; starting its flight after the registry closed is the bug."""

    def __init__(self, clock: VirtualClock | _ManualClock, *, closing: list[bool]) -> None:
        self.closed = False
        self.next_refresh_mono = clock.monotonic()
        self.flight = None
        self.starts = 0
        self._closing = closing

    def start_flight(self, *, conditional: bool, background: bool) -> None:
        if self._closing[0]:
            raise RegistryClosedError("the Registry is closed")  # what the registry's spawn does then
        self.starts += 1


class _ManualClock:
    """A clock whose sleeper the test wakes by hand, the way a timer ends a nap: normally, not by a cancel."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wake = anyio.Event()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.now:
            await anyio.lowlevel.checkpoint()
            return
        self.wake = anyio.Event()
        await self.wake.wait()


async def test_a_scheduler_stopped_in_the_round_its_nap_ends_starts_no_flight() -> None:
    clock = _ManualClock()
    closing = [False]
    scheduler = Scheduler(clock, max_flights=4)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            due = _Due(clock, closing=closing)
            due.next_refresh_mono = clock.now + 60
            scheduler.schedule(due)
            await anyio.wait_all_tasks_blocked()  # napping until the refresh is due
            clock.now += 60
            clock.wake.set()  # the nap's timer fires: the scheduler will resume normally...
            scheduler.stop()  # ...but the registry closes in the same round, before it runs
            closing[0] = True
            tg.cancel_scope.cancel()
    assert due.starts == 0  # and no RegistryClosedError came out of the task group


async def test_due_providers_start_once_each_and_the_bound_holds() -> None:
    clock = VirtualClock()
    scheduler = Scheduler(clock, max_flights=2)
    providers = [_Due(clock, closing=[False]) for _ in range(5)]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            for provider in providers:
                scheduler.schedule(provider)
            await clock.settle()
            assert [p.starts for p in providers] == [1, 1, 0, 0, 0]  # in arrival order, two at most
            assert scheduler.flights == 2
            providers[0].next_refresh_mono = math.inf  # its next wake-up: never
            scheduler.landed(providers[0], background=True)
            await clock.settle()
            assert [p.starts for p in providers] == [1, 1, 1, 0, 0]
            scheduler.stop()
    assert scheduler.flights == 2


async def test_stale_entries_are_compacted_and_a_closed_providers_wake_up_goes() -> None:
    clock = VirtualClock()
    scheduler = Scheduler(clock, max_flights=2)
    providers = [_Due(clock, closing=[False]) for _ in range(10)]
    for provider in providers:
        provider.next_refresh_mono = clock.monotonic() + 3600
        scheduler.schedule(provider)
    for step in range(1_000):  # each provider moved again and again (a refresh landing early, say)
        provider = providers[step % 10]
        provider.next_refresh_mono += 1
        scheduler.schedule(provider)
    assert scheduler.entries <= 2 * len(providers)  # stale entries never outnumber the live ones
    for provider in providers[:9]:
        provider.closed = True  # what Provider.close() does before it discards its wake-up
        scheduler.discard(provider)
    assert scheduler.entries <= 2
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await clock.advance(7200)
            scheduler.stop()
    assert [p.starts for p in providers] == [0] * 9 + [1]  # the live one still runs, once
    assert scheduler.entries == 0
