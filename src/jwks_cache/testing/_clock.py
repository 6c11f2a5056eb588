"""A virtual clock for tests on asyncio and trio alike.

Time moves only when the test calls :meth:`VirtualClock.advance`. After each jump the clock lets
every woken task run until it blocks again and waits for the registry's loopback I/O to finish
(trio-websocket#94: jumping while a request is in flight fires its timeout), so a test reads as a
timeline: "at t=300 the refresh happens, at t=360 ...".

"Blocked" means waiting on something other than the scheduler: an event, a lock, a virtual sleep,
or a socket. A task reading a loopback socket counts as blocked although its answer is on its way,
which is why the registry attaches an I/O probe: :meth:`VirtualClock.settle` returns only when every
task is blocked *and* no probe reports a request in flight.

Trio can tell when every task is blocked (``wait_all_tasks_blocked``). asyncio cannot, and anyio's
emulation sleeps a real 0.1 s whenever it finds a runnable task; so on asyncio the clock runs the
loop one round at a time until the loop's ready queue holds nothing but the clock's own wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.lowlevel

__all__ = ["VirtualClock"]

#: loop rounds one settle may take on asyncio before concluding some task never blocks
_MAX_ROUNDS: Final = 1_000_000
#: rounds of checkpoints spent on I/O in flight before napping: loopback I/O in the same loop lands
#: within a few; only I/O served elsewhere (another thread, a real stall) outlasts them
_IO_SPINS: Final = 64
#: real naps while such I/O is still in flight: from 50 us doubling to 2 ms, so a wait costs at
#: most one nap more than the I/O itself and leaves the CPU to whoever serves it
_NAP_FIRST: Final = 5e-5
_NAP_MAX: Final = 2e-3
#: real seconds of I/O in flight after which settle gives up (a stalled upstream under a virtual clock)
_IO_PATIENCE: Final = 60.0


class _Alarm:
    """A heap entry's action; cancelled alarms stay in the heap but no longer cost a settle."""

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def cancel(self) -> None:
        self.action = None


def _asyncio_ready_queue() -> collections.deque[Any] | None:
    """The running asyncio loop's queue of runnable callbacks, or None where there is none to read.

    None under trio (guest mode on an asyncio loop included) and for loops without a visible
    ``_ready`` deque (uvloop): those fall back to ``anyio.wait_all_tasks_blocked``.
    """
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, collections.deque) else None


async def _until_all_blocked() -> None:
    """Return once no task but the caller can run.

    On asyncio every wake-up passes through the loop's ready queue (a future's callbacks, I/O
    events, due timers, calls from threads), and a checkpoint puts the caller's own wake-up at its
    end. Finding the queue empty on waking means every callback of that round ran and scheduled
    nothing; a second empty round means the I/O poll and the timers of the next round woke nobody.
    """
    ready = _asyncio_ready_queue()
    if ready is None:
        await anyio.wait_all_tasks_blocked()
        return
    quiet = 0
    for _ in range(_MAX_ROUNDS):
        await anyio.lowlevel.checkpoint()
        quiet = quiet + 1 if not ready else 0
        if quiet == 2:
            return
    raise RuntimeError(f"VirtualClock.settle: tasks were still runnable after {_MAX_ROUNDS} loop rounds")


class VirtualClock:
    """A :class:`jwks_cache.Clock` whose time advances only on request.

    Args:
        start: initial monotonic reading.
        wall_start: wall-clock epoch seconds at ``start`` (default 2027-01-15T08:00:00Z).
    """

    def __init__(self, *, start: float = 1000.0, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._seq = itertools.count()
        self._io_probes: list[Callable[[], bool]] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def _arm(self, deadline: float, action: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(action)
        heapq.heappush(self._heap, (deadline, next(self._seq), alarm))
        return alarm

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        alarm = self._arm(deadline, event.set)
        try:
            await event.wait()
        finally:
            alarm.cancel()  # a sleeper cancelled early (the scheduler's naps) leaves no wake-up behind

    def schedule_cancel(self, deadline: float, scope: anyio.CancelScope) -> Callable[[], None]:
        """Cancel ``scope`` once virtual time reaches ``deadline``; returns the undo."""
        if deadline <= self._now:
            scope.cancel()
            return _nothing
        return self._arm(deadline, scope.cancel).cancel

    def attach_io_probe(self, busy: Callable[[], bool]) -> None:
        """Let :meth:`settle` wait while ``busy()`` says real I/O is in flight (the Registry attaches one)."""
        self._io_probes.append(busy)

    def detach_io_probe(self, busy: Callable[[], bool]) -> None:
        if busy in self._io_probes:
            self._io_probes.remove(busy)

    def _io_in_flight(self) -> bool:
        return any(probe() for probe in self._io_probes)

    async def settle(self) -> None:
        """Run every task until all are blocked and no HTTP request of an attached registry is in flight.

        Raises:
            RuntimeError: I/O stayed in flight for a minute of real time (an upstream that stalls
                forever can only end by a timeout, and timeouts here are virtual), or some task
                never stopped running.
        """
        waits = 0
        gives_up = 0.0
        while True:
            await _until_all_blocked()
            if not self._io_in_flight():
                return
            if waits < _IO_SPINS:
                await anyio.lowlevel.checkpoint()
            else:
                if waits == _IO_SPINS:
                    gives_up = time.monotonic() + _IO_PATIENCE
                elif time.monotonic() > gives_up:
                    raise RuntimeError(f"VirtualClock.settle: I/O still in flight after {_IO_PATIENCE:g} real seconds")
                await anyio.sleep(min(_NAP_MAX, _NAP_FIRST * 2 ** min(waits - _IO_SPINS, 16)))
            waits += 1

    def _next_live_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].action is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper in deadline order and settling between.

        Returns once every task woken on the way has run until it blocks again and no request of an
        attached registry is in flight, so the caller reads settled state at the target time.
        """
        if seconds < 0:
            raise ValueError("cannot go back in time")
        target = self._now + seconds
        await self.settle()
        heap = self._heap
        while (deadline := self._next_live_deadline()) is not None and deadline <= target:
            self._now = max(self._now, deadline)
            while heap and heap[0][0] <= self._now:
                action = heapq.heappop(heap)[2].action
                if action is not None:
                    action()
            await self.settle()
        self._now = target
        await self.settle()

    @property
    def next_deadline(self) -> float | None:
        """The earliest pending wake-up (cancelled sleeps and disarmed deadlines are skipped)."""
        return self._next_live_deadline()


def _nothing() -> None:
    pass
