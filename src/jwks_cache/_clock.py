"""The one clock seam: every read of time, every sleep and every deadline of the library goes here.

anyio has no virtual clock on asyncio (anyio#260), so the library owns one seam and tests drive it
with :class:`jwks_cache.testing.VirtualClock` on both backends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock", "fail_at", "move_on_at"]


@runtime_checkable
class Clock(Protocol):
    """Time as the library sees it.

    ``monotonic()`` drives deadlines, TTLs and backoff; ``time()`` is the wall clock for HTTP dates and
    status; ``sleep_until`` sleeps to a deadline on the monotonic scale. A clock may also offer
    ``schedule_cancel(deadline, scope) -> Callable[[], None]`` to cancel a scope at a virtual
    deadline; without it, :func:`fail_at` falls back to real-time timeouts.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """The real clocks.

    ``time.monotonic`` rather than ``anyio.current_time()``: the warm lookup path reads the clock on
    every call and the stdlib read costs a fraction of a backend lookup. Sleeps convert to relative
    durations, so trio's own clock offset does not matter.
    """

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.monotonic()))


def _cancels_at(clock: Clock) -> Callable[[float, anyio.CancelScope], Callable[[], None]] | None:
    """The clock's ``schedule_cancel`` (a virtual clock), or None: the backend's own timer will do."""
    schedule: Callable[[float, anyio.CancelScope], Callable[[], None]] | None = getattr(clock, "schedule_cancel", None)
    return schedule


@contextmanager
def _virtual_scope(
    schedule: Callable[[float, anyio.CancelScope], Callable[[], None]], deadline: float
) -> Iterator[anyio.CancelScope]:
    with anyio.CancelScope() as scope:
        unschedule = schedule(deadline, scope)
        try:
            yield scope
        finally:
            unschedule()


@contextmanager
def fail_at(clock: Clock, deadline: float) -> Iterator[anyio.CancelScope]:
    """Raise ``TimeoutError`` if the block is still running at ``deadline`` (monotonic, clock's scale).

    A plain cancel scope, not a watcher task, so it costs nothing on the fast path and cannot leak.
    Only the deadline makes the ``TimeoutError``: one the block raises itself passes through as is.
    """
    schedule = _cancels_at(clock)
    if schedule is None:
        with anyio.fail_after(max(0.0, deadline - clock.monotonic())) as scope:
            yield scope
        return
    with _virtual_scope(schedule, deadline) as scope:
        yield scope
    if scope.cancelled_caught:
        raise TimeoutError


@contextmanager
def move_on_at(clock: Clock, deadline: float) -> Iterator[anyio.CancelScope]:
    """Like :func:`fail_at`, but leave the block quietly at ``deadline``.

    Quietly only for the deadline's own cancellation: a ``TimeoutError`` the block raises (a fetch
    that timed out, say) is the caller's to see, not a deadline of ours that passed.
    """
    schedule = _cancels_at(clock)
    if schedule is None:
        with anyio.move_on_after(max(0.0, deadline - clock.monotonic())) as scope:
            yield scope
        return
    with _virtual_scope(schedule, deadline) as scope:
        yield scope
