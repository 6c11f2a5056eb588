"""When to refresh next, how long to back off, and when an unknown kid may trigger a refresh.

Pure: times are arguments and randomness comes from a ``random.Random`` the caller owns, so the
refresh loop runs in virtual time and tests pin every jittered value with a seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from typing import Final

from ._freshness import parse_delta_seconds, parse_http_date

__all__ = ["KidCooldown", "failure_delay", "refresh_delay", "retry_after_delay"]

# 2**62 times any sane base is far past every cap, and 2.0**1024 would raise OverflowError.
_MAX_EXPONENT: Final = 62
# Longer kids are remembered by digest, so the absent-kid memory is bounded in bytes, not only entries.
_MAX_KID_CHARS: Final = 128


def _uniform(low: float, high: float, rng: random.Random) -> float:
    return low if high <= low else rng.uniform(low, high)


def refresh_delay(
    *, ttl: float, refresh_early: float, prefetch_jitter: float, min_ttl: float, rng: random.Random
) -> float:
    """Seconds after a successful fetch until the next scheduled refresh.

    ``ttl - refresh_early - U(0, prefetch_jitter)``: early so fresh keys arrive before the old set
    expires, jittered so a fleet restarted together does not refresh in lockstep. Never less than
    ``min_ttl / 2``, so a TTL at or below ``refresh_early`` cannot turn into a refresh storm.
    """
    delay = ttl - refresh_early - _uniform(0.0, prefetch_jitter, rng)
    return max(delay, min_ttl / 2)


def failure_delay(consecutive_failures: int, *, min_ttl: float, rng: random.Random) -> float:
    """Seconds to wait after a refresh failed (its own retries already spent) before the next one.

    Exponential from 1 s, doubling per consecutive failure and capped at ``min_ttl / 2``, with
    "equal jitter" (``d/2 + U(0, d/2)``): spread out, yet never near 0, so a down IdP is not hammered.
    """
    exponent = min(max(consecutive_failures, 1) - 1, _MAX_EXPONENT)
    delay = min(2.0**exponent, min_ttl / 2)
    return delay / 2 + _uniform(0.0, delay / 2, rng)


def retry_after_delay(value: str | None, *, now: float) -> float | None:
    """Read a Retry-After value (RFC 9110 §10.2.3) as seconds from ``now``, or None.

    Either delta-seconds or an HTTP-date; a date in the past means 0. Absent or invalid values give
    None so the caller falls back to its own backoff. The caller still bounds the result by its
    retry deadline: a server cannot park a refresh for hours.

    Args:
        value: the field value, or None when the response had none.
        now: wall-clock epoch seconds (HTTP-dates are wall-clock), not the monotonic scale.
    """
    if value is None:
        return None
    text = value.strip()
    seconds = parse_delta_seconds(text)
    if seconds is not None:
        return float(seconds)
    when = parse_http_date(text, now=now)
    return None if when is None else max(0.0, when - now)


def _memory_key(kid: str) -> str | bytes:
    if len(kid) <= _MAX_KID_CHARS:
        return kid
    return hashlib.blake2b(kid.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class KidCooldown:
    """Per-provider throttle of refreshes triggered by unknown kids; plus a bounded LRU of kids found absent.

    Tokens carry attacker-chosen kids, so an unknown kid may start at most one refresh per
    ``cooldown`` (failures count too, or a flapping IdP would dodge the limit), and kids that were
    still missing after a refresh are remembered for ``cooldown`` so repeats are refused in O(1).
    Memory is bounded: at most ``absent_capacity`` entries, long kids kept as a 16-byte digest.
    Times are monotonic seconds.
    """

    __slots__ = ("_absent", "_capacity", "_cooldown", "_last_refresh")

    def __init__(self, cooldown: float, *, absent_capacity: int = 1024) -> None:
        self._cooldown = cooldown
        self._capacity = max(absent_capacity, 0)
        self._last_refresh: float | None = None
        self._absent: OrderedDict[str | bytes, float] = OrderedDict()

    @property
    def cooldown(self) -> float:
        """Minimum seconds between unknown-kid refreshes, and how long an absent kid is remembered."""
        return self._cooldown

    def __len__(self) -> int:
        """Number of absent kids currently remembered (expired ones may linger until looked up)."""
        return len(self._absent)

    def may_refresh(self, now: float) -> bool:
        """Whether an unknown kid may start a refresh: none started within ``cooldown`` before ``now``."""
        return self._last_refresh is None or now - self._last_refresh >= self._cooldown

    def note_refresh(self, now: float) -> None:
        """Record that an unknown-kid refresh started; call it whatever the refresh's outcome."""
        self._last_refresh = now

    def remember_absent(self, kid: str, now: float) -> None:
        """Remember that ``kid`` was still missing after a refresh, evicting the oldest beyond capacity."""
        if self._capacity == 0 or self._cooldown <= 0:
            return
        key = _memory_key(kid)
        self._absent[key] = now
        self._absent.move_to_end(key)
        while len(self._absent) > self._capacity:
            self._absent.popitem(last=False)

    def recently_absent(self, kid: str, now: float) -> bool:
        """Whether ``kid`` was remembered absent less than ``cooldown`` before ``now``."""
        key = _memory_key(kid)
        since = self._absent.get(key)
        if since is None:
            return False
        if now - since >= self._cooldown:
            del self._absent[key]
            return False
        self._absent.move_to_end(key)
        return True

    def forget_all(self) -> None:
        """Drop the absent-kid memory: a new key set arrived, so any kid may now exist."""
        self._absent.clear()
