"""One task per Registry that starts each provider's refresh when it falls due.

A sleeping task, task group and cancel scopes per provider cost kilobytes and a task start on every
registration; with tens of thousands of tenants that dominates memory and registration time. A heap
of due times and one sleeping task does the same work: providers only record when they want to run.
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

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Provider]] = []
        self._seq = itertools.count()  # ties broken by arrival, never by comparing providers
        self._nap: anyio.CancelScope | None = None
        self._nap_until = math.inf

    def schedule(self, provider: Provider) -> None:
        """Make sure ``provider`` is woken at its current ``next_refresh`` (idempotent)."""
        if provider.closed or provider.scheduled_at == provider.next_refresh:
            return
        provider.scheduled_at = when = provider.next_refresh
        heapq.heappush(self._heap, (when, next(self._seq), provider))
        if when < self._nap_until and self._nap is not None:
            self._nap.cancel()  # the new wake-up is earlier than the one we sleep towards

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while True:
            now = self._clock.monotonic()
            while heap and heap[0][0] <= now:
                when, _, provider = heapq.heappop(heap)
                if provider.closed or when != provider.scheduled_at:
                    continue  # superseded by a later schedule() or an unregister
                provider.scheduled_at = None  # the flight's end schedules the next wake-up
                if provider.flight is None:
                    provider.start_flight(conditional=True)
            self._nap_until = heap[0][0] if heap else math.inf
            with anyio.CancelScope() as nap:
                self._nap = nap
                await self._clock.sleep_until(self._nap_until)
            self._nap = None
