"""One task per Registry that starts each provider's refresh when it falls due.

A sleeping task, task group and cancel scopes per provider cost kilobytes and a task start on every
registration; with tens of thousands of tenants that dominates memory and registration time. A heap
of due times and one sleeping task does the same work: providers only record when they want to run.

The scheduler also bounds how many refreshes it runs at once. Ten thousand providers registered
at start-up all fall due together; started at once they would be ten thousand tasks parked on the
fetcher's limiter, holding their frames and buffers (memory, and garbage-collector passes that make
registration superlinear). Due providers wait in the heap instead, where waiting costs no deadline.
The bound equals the fetcher's background request slots (half of ``max_concurrent_fetches``:
callers' cold lookups never queue behind refreshes). It counts whole flights, backoff sleeps included: when many identity
providers fail at once, other tenants' refreshes run later, never fail because of them, and a
caller whose keys ran out fetches for itself.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from .._clock import Clock

__all__ = ["Scheduled", "Scheduler"]


class Scheduled(Protocol):
    """What the scheduler needs of a provider: when it wants to run, and a way to start it.

    Read only: the wake-up the scheduler holds for a provider is the scheduler's own bookkeeping.
    """

    @property
    def closed(self) -> bool: ...
    @property
    def next_refresh_mono(self) -> float: ...
    @property
    def flight(self) -> object | None: ...
    def start_flight(self, *, conditional: bool, background: bool = False) -> object: ...


class Scheduler:
    """Wakes providers at their ``next_refresh_mono``; stale heap entries are skipped, never searched for.

    ``_wakeups`` holds the one live wake-up of each provider; a heap entry whose time is not its
    provider's live wake-up is stale. An entry goes stale when its provider is rescheduled or
    closed (a re-registration closes the old provider). Stale entries are counted, and the heap is rebuilt without them once they are
    as many as the live ones: re-registering one tenant 20,000 times must not leave 20,000 entries
    (and providers) behind until each falls due, a day later. The rebuild costs one pass over at
    most twice the live entries, paid for by as many stale ones: ``schedule`` stays O(log n).
    """

    def __init__(self, clock: Clock, *, max_flights: int) -> None:
        # max_flights: the fetcher's background request slots, so a refresh never queues for a
        # slot inside its own retry deadline (which would record a failure that only other
        # tenants' slow identity providers caused)
        self._clock = clock
        self._max_flights = max_flights
        self.flights = 0  # background flights started and not yet landed
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._wakeups: dict[Scheduled, float] = {}  # the live wake-up of each provider in the heap
        self._seq = itertools.count()  # ties broken by arrival, never by comparing providers
        self._stale = 0  # heap entries superseded by a later schedule() or by a close
        self._nap: anyio.CancelScope | None = None
        self._nap_until_mono = math.inf
        self._stopped = False

    def schedule(self, provider: Scheduled) -> None:
        """Make sure ``provider`` is woken at its current ``next_refresh_mono`` (idempotent)."""
        when = provider.next_refresh_mono
        if provider.closed:
            return
        held = self._wakeups.get(provider)
        if held == when:
            return
        self._wakeups[provider] = when
        if held is not None:
            self._went_stale()  # the earlier wake-up's entry
        heapq.heappush(self._heap, (when, next(self._seq), provider))
        if when < self._nap_until_mono and self._nap is not None and self.flights < self._max_flights:
            self._nap.cancel()  # the new wake-up is earlier than the one we sleep towards

    def discard(self, provider: Scheduled) -> None:
        """``provider`` closed: its pending wake-up, if any, will never run."""
        if self._wakeups.pop(provider, None) is not None:
            self._went_stale()

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (for tests: at most twice the scheduled providers)."""
        return len(self._heap)

    def _went_stale(self) -> None:
        self._stale += 1
        if self._stale * 2 >= len(self._heap):
            self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from its live entries, one per provider, in place (``run`` holds it)."""
        seen: set[int] = set()
        live: list[tuple[float, int, Scheduled]] = []
        for entry in self._heap:
            when, _, provider = entry
            if not provider.closed and when == self._wakeups.get(provider) and id(provider) not in seen:
                seen.add(id(provider))  # a provider moved back to an earlier time has two such entries
                live.append(entry)
        heapq.heapify(live)
        self._heap[:] = live
        self._stale = 0

    def stop(self) -> None:
        """Start no more flights: the registry is closing.

        Cancelling the registry's task group is not enough on its own: a nap that ended in the
        same loop round resumes normally, and a flight started then would meet a closed registry.
        """
        self._stopped = True
        if self._nap is not None:
            self._nap.cancel()

    def landed(self, provider: Scheduled, background: bool) -> None:
        """A flight of ``provider`` ended: schedule its next wake-up, and free a slot if it was ours."""
        if background:
            self.flights -= 1
            if self.flights == self._max_flights - 1 and self._nap is not None:
                self._nap.cancel()  # we were full: due providers may be waiting for this slot
        if not provider.closed:
            self.schedule(provider)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while not self._stopped:
            now = self._clock.monotonic()
            while heap and heap[0][0] <= now and self.flights < self._max_flights:
                when, _, provider = heapq.heappop(heap)
                if provider.closed or when != self._wakeups.get(provider):
                    self._stale -= 1
                    continue  # superseded by a later schedule() or an unregister
                del self._wakeups[provider]  # the flight's end schedules the next wake-up
                if provider.flight is None:
                    provider.start_flight(conditional=True, background=True)
                    self.flights += 1
            # when full, sleep until a landing frees a slot (it cancels the nap)
            self._nap_until_mono = heap[0][0] if heap and self.flights < self._max_flights else math.inf
            with anyio.CancelScope() as nap:
                self._nap = nap
                await self._clock.sleep_until(self._nap_until_mono)
            self._nap = None
