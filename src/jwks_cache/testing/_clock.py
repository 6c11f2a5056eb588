"""A virtual clock for tests on asyncio and trio alike.

Time moves only when the test calls :meth:`VirtualClock.advance`. Between jumps the clock lets every
task run and waits for loopback I/O to finish (trio-websocket#94: jumping while a request is in flight
fires its timeout), so a test reads as a timeline: "at t=300 the refresh happens, at t=360 ...".
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["VirtualClock"]

_SETTLE_SPINS = 200_000
_PRE_SPINS = 8  # scheduler rounds before asking whether every task is blocked  # bound on checkpoints spent waiting for loopback I/O between jumps


async def _all_blocked() -> None:
    """``wait_all_tasks_blocked``, minus most of its cost on asyncio.

    anyio's asyncio version sleeps a real 0.1 s whenever it finds a runnable task; letting the
    scheduler run a few rounds first means it usually finds none and returns at once.
    """
    for _ in range(_PRE_SPINS):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


class VirtualClock:
    """A :class:`jwks_cache.Clock` whose time advances only on request.

    Args:
        start: initial monotonic reading.
        wall_start: wall-clock epoch seconds at ``start`` (default 2027-01-15T08:00:00Z).
    """

    def __init__(self, *, start: float = 1000.0, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._io_probes: list[Callable[[], bool]] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._heap, (deadline, next(self._seq), event.set))
        await event.wait()

    def schedule_cancel(self, deadline: float, scope: anyio.CancelScope) -> Callable[[], None]:
        """Cancel ``scope`` once virtual time reaches ``deadline``; returns the undo."""
        armed = True

        def fire() -> None:
            if armed:
                scope.cancel()

        def disarm() -> None:
            nonlocal armed
            armed = False

        if deadline <= self._now:
            scope.cancel()
        else:
            heapq.heappush(self._heap, (deadline, next(self._seq), fire))
        return disarm

    def attach_io_probe(self, busy: Callable[[], bool]) -> None:
        """Let :meth:`settle` wait while ``busy()`` says real I/O is in flight (the Registry attaches one)."""
        self._io_probes.append(busy)

    def detach_io_probe(self, busy: Callable[[], bool]) -> None:
        if busy in self._io_probes:
            self._io_probes.remove(busy)

    async def settle(self) -> None:
        """Run every task until all are blocked and no HTTP request is in flight."""
        for _ in range(_SETTLE_SPINS):
            await _all_blocked()
            if not any(probe() for probe in self._io_probes):
                await _all_blocked()
                if not any(probe() for probe in self._io_probes):
                    return
            await anyio.lowlevel.checkpoint()
        raise RuntimeError("VirtualClock.settle: I/O still in flight after the spin bound")

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper in deadline order and settling between."""
        if seconds < 0:
            raise ValueError("cannot go back in time")
        target = self._now + seconds
        await self.settle()
        while self._heap and self._heap[0][0] <= target:
            deadline = self._heap[0][0]
            self._now = max(self._now, deadline)
            while self._heap and self._heap[0][0] <= self._now:
                heapq.heappop(self._heap)[2]()
            await self.settle()
        self._now = target
        await self.settle()

    @property
    def next_deadline(self) -> float | None:
        """The earliest pending wake-up (may belong to a sleeper that has since gone away)."""
        return self._heap[0][0] if self._heap else None
