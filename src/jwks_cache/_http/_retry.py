"""Retries of one refresh: the only tenacity import.

tenacity decides *whether* and *how long*; the clock seam does the sleeping and the whole sequence
runs under one ``fail_at`` deadline (not ``stop_after_delay``, which reads real time).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from .._clock import Clock, fail_at
from .._config import RetryPolicy
from .._errors import FetchError
from ._cadence import retry_backoff

__all__ = ["with_retries"]

_T = TypeVar("_T")


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.transient


async def with_retries(
    attempt: Callable[[], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    url: str,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> _T:
    """Run ``attempt`` until it succeeds, a non-transient error occurs, retries run out or the deadline passes.

    Raises the last attempt's own error (``reraise``), never a tenacity type; a ``Retry-After`` that
    would overrun the deadline ends the sequence at once rather than sleeping into a certain timeout.
    """
    deadline = clock.monotonic() + policy.deadline
    previous = [policy.initial_backoff]

    def wait(state: tenacity.RetryCallState) -> float:
        delay = retry_backoff(
            state.attempt_number,
            initial=policy.initial_backoff,
            maximum=policy.max_backoff,
            jitter=policy.jitter,
            previous=previous[0],
            rng=rng,
        )
        previous[0] = delay
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, FetchError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    def should_retry(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None or not _is_transient(exc):
            return False
        # a server asking us to come back after the deadline is a failure now, not a sleep into a timeout
        retry_after = exc.retry_after if isinstance(exc, FetchError) else None
        return not (retry_after is not None and clock.monotonic() + retry_after > deadline)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc)

    async def sleep(seconds: float) -> None:
        await clock.sleep_until(clock.monotonic() + seconds)

    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(policy.max_retries + 1),
        wait=wait,
        retry=should_retry,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        with fail_at(clock, deadline):
            return await retrying(attempt)
    except TimeoutError:
        raise FetchError(
            f"GET {url}: gave up after the {policy.deadline:g}s retry deadline", url=url, transient=True
        ) from None
