"""Retries of one refresh, and the backoff of any reconnect loop: the only tenacity import.

tenacity decides *whether* and *how long*, through its own strategies; the clock seam does the
sleeping and the whole sequence runs under one ``fail_at`` deadline (not ``stop_after_delay``,
which reads real time). tenacity's jittered strategies draw from the global ``random`` module, so
the two used here draw from the registry's own ``random.Random`` instead: a seeded registry
(``Registry(rng=...)``) backs off the same way on every run.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import tenacity
from tenacity.wait import wait_base

from .._clock import Clock, fail_at
from .._config import RetryPolicy
from .._errors import ConfigError, FetchError

__all__ = ["backoff", "reconnect_delay", "with_retries"]

_T = TypeVar("_T")


class _FullJitter(tenacity.wait_random_exponential):
    """tenacity's "full jitter" (``U(0, exponential)``), drawing from our generator."""

    def __init__(self, rng: random.Random, *, multiplier: float, max: float) -> None:  # noqa: A002 - tenacity's name
        super().__init__(multiplier=multiplier, max=max)
        self._rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        high = tenacity.wait_exponential.__call__(self, retry_state)
        return self._rng.uniform(self.min, high)


class _DecorrelatedJitter(wait_base):
    """AWS "decorrelated jitter": ``min(max, U(initial, previous * 3))``; tenacity has no such strategy.

    Keeps the previous delay, so one instance serves one retry sequence.
    """

    def __init__(self, rng: random.Random, *, initial: float, maximum: float) -> None:
        self._rng = rng
        self._initial = initial
        self._maximum = maximum
        self._previous = initial

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        high = max(self._previous, self._initial) * 3
        self._previous = min(self._maximum, self._rng.uniform(self._initial, high))
        return self._previous


class _AtLeastRetryAfter(wait_base):
    """The backoff, or the server's ``Retry-After`` when longer (RFC 9110 §10.2.3)."""

    def __init__(self, base: wait_base) -> None:
        self._base = base

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = self._base(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(exc, FetchError) and exc.retry_after is not None:
            return max(delay, exc.retry_after)
        return delay


def backoff(
    jitter: Literal["none", "full", "decorrelated"], *, initial: float, maximum: float, rng: random.Random
) -> wait_base:
    """The wait between retries: ``initial * 2**(n-1)`` capped at ``maximum``, jittered as asked.

    ``"full"``: ``U(0, that)``; ``"decorrelated"``: ``min(maximum, U(initial, previous * 3))`` (AWS
    "Exponential Backoff and Jitter"). A new one per retry sequence (decorrelated keeps state).

    Raises:
        ConfigError: ``jitter`` is none of the three names (only reachable by bypassing RetryPolicy).
    """
    if jitter == "none":
        return tenacity.wait_exponential(multiplier=initial, max=maximum)
    if jitter == "full":
        return _FullJitter(rng, multiplier=initial, max=maximum)
    if jitter == "decorrelated":
        return _DecorrelatedJitter(rng, initial=initial, maximum=maximum)
    raise ConfigError(f"retry.jitter must be 'none', 'full' or 'decorrelated' (got {jitter!r})")


def reconnect_delay(failures: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` failed attempts of a loop that reconnects for ever (a
    store's listener): tenacity's exponential from ``2 * initial`` up to ``maximum``, with "equal
    jitter" (half to all of it), so it never spins and a fleet does not reconnect in lockstep."""
    state = tenacity.RetryCallState(retry_object=tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = failures + 1  # tenacity's exponent is attempt_number - 1
    return tenacity.wait_exponential(multiplier=initial, max=maximum)(state) * rng.uniform(0.5, 1.0)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.transient


def _worth_retrying(exc: BaseException, *, clock: Clock, deadline: float) -> bool:
    """Transient, and not asked by the server to come back after our deadline (a failure now,
    not a sleep into a timeout)."""
    if not _is_transient(exc):
        return False
    retry_after = exc.retry_after if isinstance(exc, FetchError) else None
    return not (retry_after is not None and clock.monotonic() + retry_after > deadline)


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

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc)

    async def sleep(seconds: float) -> None:
        await clock.sleep_until(clock.monotonic() + seconds)

    wait = backoff(policy.jitter, initial=policy.initial_backoff, maximum=policy.max_backoff, rng=rng)
    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(policy.max_retries + 1),
        wait=_AtLeastRetryAfter(wait),
        retry=tenacity.retry_if_exception(functools.partial(_worth_retrying, clock=clock, deadline=deadline)),
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
