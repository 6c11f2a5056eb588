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
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ._clock import Clock

if TYPE_CHECKING:
    from ._provider import Provider

__all__ = ["Scheduler"]


class Scheduler:
    """Wakes providers at their ``next_refresh``; stale heap entries are skipped, never searched for."""

    def __init__(self, clock: Clock, *, max_flights: int) -> None:
        # max_flights: the fetcher's background request slots, so a refresh never queues for a
        # slot inside its own retry deadline (which would record a failure that only other
        # tenants' slow identity providers caused)
        self._clock = clock
        self._max_flights = max_flights
        self.flights = 0  # background flights started and not yet landed
        self._heap: list[tuple[float, int, Provider]] = []
        self._seq = itertools.count()  # ties broken by arrival, never by comparing providers
        self._nap: anyio.CancelScope | None = None
        self._nap_until = math.inf
        self._stopped = False

    def schedule(self, provider: Provider) -> None:
        """Make sure ``provider`` is woken at its current ``next_refresh`` (idempotent)."""
        if provider.closed or provider.scheduled_at == provider.next_refresh:
            return
        provider.scheduled_at = when = provider.next_refresh
        heapq.heappush(self._heap, (when, next(self._seq), provider))
        if when < self._nap_until and self._nap is not None and self.flights < self._max_flights:
            self._nap.cancel()  # the new wake-up is earlier than the one we sleep towards

    def stop(self) -> None:
        """Start no more flights: the registry is closing.

        Cancelling the registry's task group is not enough on its own: a nap that ended in the
        same loop round resumes normally, and a flight started then would meet a closed registry.
        """
        self._stopped = True
        if self._nap is not None:
            self._nap.cancel()

    def landed(self, provider: Provider, background: bool) -> None:
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
                if provider.closed or when != provider.scheduled_at:
                    continue  # superseded by a later schedule() or an unregister
                provider.scheduled_at = None  # the flight's end schedules the next wake-up
                if provider.flight is None:
                    provider.start_flight(conditional=True, background=True)
                    self.flights += 1
            # when full, sleep until a landing frees a slot (it cancels the nap)
            self._nap_until = heap[0][0] if heap and self.flights < self._max_flights else math.inf
            with anyio.CancelScope() as nap:
                self._nap = nap
                await self._clock.sleep_until(self._nap_until)
            self._nap = None
