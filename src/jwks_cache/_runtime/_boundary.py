"""The failure boundary of every task a Registry runs.

A Registry serves many tenants from one task group, and an exception escaping any task of a task
group cancels all of them: one hostile discovery document, forged fleet notice or bug in one
flight would stop every tenant's verification. So no library task is started bare. Each goes
through :func:`run_once` (a flight: one provider's one refresh) or :func:`run_supervised` (a loop
the registry cannot do without: the scheduler, the persister, the fleet listener), which turn any
``Exception`` into a typed :class:`~jwks_cache.JwksCacheError`, report it once (a log line with the
traceback and a span event) and hand it to the owner, which records it where it belongs: on the
provider whose work failed, or on the registry's own counters. A supervised loop is started again
after a capped backoff, so a bug that fires on every pass costs a log line per backoff, not a spin.

``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``,
``SystemExit``) is never caught: those end the Registry as they should.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus
from opentelemetry import trace

from .._clock import Clock
from .._errors import FetchError, JwksCacheError

__all__ = ["as_library_error", "run_once", "run_supervised"]

log = logging.getLogger("jwks_cache")

_FIRST_RESTART: Final = 0.5  # seconds before a crashed loop runs again; doubled per crash in a row
_MAX_RESTART: Final = 60.0
_SHOWN_CHARS: Final = 200  # of an unexpected exception's text in a message (it may quote input)

#: Called with the typed error a task failed with.
OnFailure = Callable[[JwksCacheError], None]


def as_library_error(exc: Exception, what: str, *, url: str | None = None) -> JwksCacheError:
    """``exc`` as the library's own type: a ``JwksCacheError`` stays itself, anything else (a bug, a
    ``RecursionError`` from a parser, an error type of a dependency) becomes a :class:`FetchError`
    naming ``what`` failed, with the original as ``__cause__`` for the traceback."""
    if isinstance(exc, JwksCacheError):
        return exc
    text = str(exc)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    error = FetchError(f"{what}: unexpected {type(exc).__name__}: {text}", url=url)
    error.__cause__ = exc
    return error


def report(name: str, exc: BaseException) -> None:
    """One WARNING line with the traceback, and an event on the current span, for a task's failure."""
    log.warning("jwks-cache: %s failed: %r", name, exc, exc_info=exc, extra={"event": "task_failed", "task": name})
    trace.get_current_span().add_event("jwks_cache.task_failed", {"task": name, "error.type": type(exc).__qualname__})


async def run_once(name: str, on_failure: OnFailure, job: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run a one-shot task; a failure is reported and given to ``on_failure``, never raised."""
    try:
        await job(*args)
    except Exception as exc:  # the boundary: nothing a task does may end its siblings
        report(name, exc)
        _call_owner(name, on_failure, as_library_error(exc, name))


async def run_supervised(
    name: str,
    clock: Clock,
    on_failure: OnFailure,
    job: Callable[..., Awaitable[Any]],
    *args: Any,
    task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a loop that takes ``task_status``; when it fails, report it and start it again after a backoff.

    The loop's own ``task_status.started()`` is passed through on the first run; a loop that fails
    before calling it is reported started anyway, so entering the Registry never waits on a crash.
    """
    status = _StartedOnce(task_status)
    delay = _FIRST_RESTART
    while True:
        started_at = clock.monotonic()
        try:
            await job(*args, task_status=status)
            status.started()
            return  # the loop ended by itself (the scheduler after stop())
        except Exception as exc:  # the boundary: see the module docstring
            report(name, exc)
            _call_owner(name, on_failure, as_library_error(exc, name))
        status.started()
        if clock.monotonic() - started_at > _MAX_RESTART:
            delay = _FIRST_RESTART  # it ran for a while: a new fault, not the same one again
        await clock.sleep_until(clock.monotonic() + delay)
        delay = min(delay * 2, _MAX_RESTART)


def _call_owner(name: str, on_failure: OnFailure, error: JwksCacheError) -> None:
    try:
        on_failure(error)
    except Exception as exc:  # an owner's bookkeeping must not turn one failure into a stopped registry
        report(f"{name} (recording its failure)", exc)


class _StartedOnce:
    """A TaskStatus whose ``started`` may be called again: the supervisor and the job both report it."""

    __slots__ = ("_done", "_status")

    def __init__(self, status: TaskStatus[Any]) -> None:
        self._status = status
        self._done = False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._status.started(value)
