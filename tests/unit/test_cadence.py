"""Refresh scheduling, backoff and the unknown-kid cooldown, with seeded randomness."""

from __future__ import annotations

import calendar
import random

import pytest
import tenacity

from jwks_cache._errors import ConfigError
from jwks_cache._http._cadence import KidCooldown, failure_delay, refresh_delay, retry_after_delay
from jwks_cache._http._retry import backoff, reconnect_delay

SEEDS = range(500)
NOW = float(calendar.timegm((2025, 3, 1, 12, 0, 0)))


def _spread(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


# -- refresh_delay ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "refresh_early", "prefetch_jitter", "min_ttl", "low", "high"),
    [
        pytest.param(300.0, 30.0, 5.0, 30.0, 265.0, 270.0, id="typical"),
        pytest.param(300.0, 30.0, 0.0, 30.0, 270.0, 270.0, id="no-jitter"),
        pytest.param(86400.0, 30.0, 60.0, 30.0, 86310.0, 86370.0, id="max-ttl"),
        pytest.param(30.0, 30.0, 5.0, 30.0, 15.0, 15.0, id="ttl-equals-refresh-early-floored"),
        pytest.param(30.0, 300.0, 5.0, 30.0, 15.0, 15.0, id="ttl-below-refresh-early-floored"),
        pytest.param(40.0, 20.0, 10.0, 30.0, 15.0, 20.0, id="jitter-crosses-floor"),
        pytest.param(300.0, 30.0, -5.0, 30.0, 270.0, 270.0, id="negative-jitter-is-none"),
    ],
)
def test_refresh_delay_bounds(
    ttl: float, refresh_early: float, prefetch_jitter: float, min_ttl: float, low: float, high: float
) -> None:
    delays = [
        refresh_delay(
            ttl=ttl, refresh_early=refresh_early, prefetch_jitter=prefetch_jitter, min_ttl=min_ttl, rng=random.Random(s)
        )
        for s in SEEDS
    ]
    lo, hi = _spread(delays)
    assert low <= lo <= hi <= high
    if low < high and prefetch_jitter > 0:
        assert hi - lo > (high - low) * 0.5  # jitter really spreads


def test_refresh_delay_is_deterministic_per_seed() -> None:
    def pick(seed: int) -> float:
        return refresh_delay(ttl=300.0, refresh_early=30.0, prefetch_jitter=5.0, min_ttl=30.0, rng=random.Random(seed))

    assert pick(7) == pick(7)
    assert pick(7) != pick(8)


# -- failure_delay ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "min_ttl", "cap"),
    [
        pytest.param(1, 30.0, 1.0, id="first"),
        pytest.param(2, 30.0, 2.0, id="second"),
        pytest.param(3, 30.0, 4.0, id="third"),
        pytest.param(4, 30.0, 8.0, id="fourth"),
        pytest.param(5, 30.0, 15.0, id="capped-at-half-min-ttl"),
        pytest.param(50, 30.0, 15.0, id="many"),
        pytest.param(10_000, 30.0, 15.0, id="no-overflow"),
        pytest.param(0, 30.0, 1.0, id="zero-treated-as-first"),
        pytest.param(-3, 30.0, 1.0, id="negative-treated-as-first"),
        pytest.param(20, 3600.0, 1800.0, id="large-min-ttl"),
    ],
)
def test_failure_delay_equal_jitter_bounds(failures: int, min_ttl: float, cap: float) -> None:
    delays = [failure_delay(failures, min_ttl=min_ttl, rng=random.Random(s)) for s in SEEDS]
    lo, hi = _spread(delays)
    assert cap / 2 <= lo <= hi <= cap
    assert lo < cap * 0.6
    assert hi > cap * 0.9


# -- retry backoff: tenacity's strategies, drawing from the registry's generator ------------------


def _waits(jitter: str, rng: random.Random, attempts: range) -> list[float]:
    """The waits a retry sequence sleeps, as tenacity asks its wait strategy for them."""
    wait = backoff(jitter, initial=0.25, maximum=2.0, rng=rng)  # type: ignore[arg-type]
    state = tenacity.RetryCallState(retry_object=tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    waits = []
    for attempt in attempts:
        state.attempt_number = attempt
        waits.append(wait(state))
    return waits


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        pytest.param(1, 0.25, id="first"),
        pytest.param(2, 0.5, id="second"),
        pytest.param(3, 1.0, id="third"),
        pytest.param(4, 2.0, id="reaches-cap"),
        pytest.param(5, 2.0, id="capped"),
        pytest.param(100_000, 2.0, id="no-overflow"),
    ],
)
def test_retry_backoff_none_is_exponential_and_capped(attempt: int, expected: float) -> None:
    assert _waits("none", random.Random(0), range(attempt, attempt + 1)) == [expected]


@pytest.mark.parametrize(("attempt", "cap"), [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (9, 2.0)])
def test_retry_backoff_full_jitter_bounds(attempt: int, cap: float) -> None:
    delays = [_waits("full", random.Random(s), range(attempt, attempt + 1))[0] for s in SEEDS]
    lo, hi = _spread(delays)
    assert 0.0 <= lo < cap * 0.1
    assert cap * 0.9 < hi <= cap


def test_retry_backoff_decorrelated_first_wait_is_within_initial_and_three_times_it() -> None:
    delays = [_waits("decorrelated", random.Random(s), range(1, 2))[0] for s in SEEDS]
    lo, hi = _spread(delays)
    assert 0.25 <= lo <= hi <= 0.75


def test_retry_backoff_decorrelated_sequence_stays_within_bounds() -> None:
    for delay in _waits("decorrelated", random.Random(42), range(1, 200)):
        assert 0.25 <= delay <= 2.0


@pytest.mark.parametrize("jitter", ["full", "decorrelated"])
def test_retry_backoff_draws_only_from_the_registrys_generator(jitter: str) -> None:
    """A seeded registry backs off identically on every run, whatever else uses ``random``."""
    random.seed(1)
    first = _waits(jitter, random.Random(7), range(1, 8))
    random.seed(2)
    assert _waits(jitter, random.Random(7), range(1, 8)) == first


def test_retry_backoff_unknown_jitter_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"retry\.jitter"):
        _waits("wild", random.Random(0), range(1, 2))


def test_reconnect_delay_doubles_from_twice_initial_with_equal_jitter_and_caps() -> None:
    for failures, full in ((1, 0.1), (2, 0.2), (3, 0.4), (10, 5.0), (100_000, 5.0)):
        delays = [reconnect_delay(failures, initial=0.05, maximum=5.0, rng=random.Random(s)) for s in SEEDS]
        lo, hi = _spread(delays)
        assert full * 0.5 <= lo < full * 0.6
        assert full * 0.9 < hi <= full


# -- retry_after_delay (RFC 9110 §10.2.3) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(" 120 ", 120.0, id="delta-seconds-ows"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("99999999999999", float(2**31), id="saturates"),
        pytest.param("Sat, 01 Mar 2025 12:01:30 GMT", 90.0, id="imf-fixdate"),
        pytest.param("Saturday, 01-Mar-25 12:01:30 GMT", 90.0, id="rfc850"),
        pytest.param("Sat Mar  1 12:01:30 2025", 90.0, id="asctime"),
        pytest.param("Sat, 01 Mar 2025 11:00:00 GMT", 0.0, id="date-in-past"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("soon", None, id="junk"),
        pytest.param("", None, id="empty"),
    ],
)
def test_retry_after_delay(value: str | None, expected: float | None) -> None:
    assert retry_after_delay(value, now=NOW) == expected


# -- KidCooldown -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cooldown", "started", "now", "expected"),
    [
        pytest.param(30.0, None, 100.0, True, id="never-refreshed"),
        pytest.param(30.0, 100.0, 100.0, False, id="just-started"),
        pytest.param(30.0, 100.0, 129.999, False, id="inside-cooldown"),
        pytest.param(30.0, 100.0, 130.0, True, id="cooldown-elapsed"),
        pytest.param(0.0, 100.0, 100.0, True, id="cooldown-off"),
    ],
)
def test_may_refresh(cooldown: float, started: float | None, now: float, expected: bool) -> None:
    cooldown_ = KidCooldown(cooldown)
    if started is not None:
        cooldown_.note_refresh(started)
    assert cooldown_.may_refresh(now) is expected


def test_note_refresh_restarts_the_window() -> None:
    cooldown = KidCooldown(30.0)
    cooldown.note_refresh(0.0)
    cooldown.note_refresh(20.0)
    assert not cooldown.may_refresh(40.0)
    assert cooldown.may_refresh(50.0)


@pytest.mark.parametrize(
    ("remembered", "asked", "expected"),
    [
        pytest.param(100.0, 100.0, True, id="just-remembered"),
        pytest.param(100.0, 129.0, True, id="inside-cooldown"),
        pytest.param(100.0, 130.0, False, id="expired"),
    ],
)
def test_recently_absent_window(remembered: float, asked: float, expected: bool) -> None:
    cooldown = KidCooldown(30.0)
    cooldown.remember_absent("bogus", remembered)
    assert cooldown.recently_absent("bogus", asked) is expected
    assert not cooldown.recently_absent("other", asked)


def test_expired_absent_kid_is_dropped() -> None:
    cooldown = KidCooldown(30.0)
    cooldown.remember_absent("bogus", 0.0)
    assert not cooldown.recently_absent("bogus", 31.0)
    assert len(cooldown) == 0


def test_forget_all_clears_absent_kids_but_not_the_refresh_window() -> None:
    cooldown = KidCooldown(30.0)
    cooldown.note_refresh(0.0)
    cooldown.remember_absent("a", 0.0)
    cooldown.remember_absent("b", 0.0)
    cooldown.forget_all()
    assert len(cooldown) == 0
    assert not cooldown.recently_absent("a", 1.0)
    assert not cooldown.may_refresh(1.0)


def test_absent_memory_is_bounded_lru() -> None:
    cooldown = KidCooldown(30.0)
    for i in range(10_000):
        cooldown.remember_absent(f"kid-{i}", 1.0)
    assert len(cooldown) == 1024
    assert cooldown.recently_absent("kid-9999", 2.0)
    assert cooldown.recently_absent("kid-8976", 2.0)  # the oldest survivor
    assert not cooldown.recently_absent("kid-8975", 2.0)  # evicted
    assert not cooldown.recently_absent("kid-0", 2.0)


def test_lookup_refreshes_lru_position() -> None:
    cooldown = KidCooldown(30.0, absent_capacity=2)
    cooldown.remember_absent("a", 0.0)
    cooldown.remember_absent("b", 0.0)
    assert cooldown.recently_absent("a", 1.0)
    cooldown.remember_absent("c", 1.0)  # evicts b, the least recently used
    assert cooldown.recently_absent("a", 1.0)
    assert not cooldown.recently_absent("b", 1.0)
    assert cooldown.recently_absent("c", 1.0)


def test_long_kids_are_remembered_by_digest() -> None:
    cooldown = KidCooldown(30.0, absent_capacity=4)
    huge = "k" * 1_000_000
    cooldown.remember_absent(huge, 0.0)
    assert cooldown.recently_absent(huge, 1.0)
    assert not cooldown.recently_absent(huge[:-1] + "x", 1.0)
    assert cooldown.recently_absent("k" * 1_000_000, 1.0)
    assert not cooldown.recently_absent("\ud800" * 200, 1.0)  # lone surrogates from JSON do not crash


@pytest.mark.parametrize(
    ("cooldown", "capacity"),
    [pytest.param(0.0, 1024, id="cooldown-off"), pytest.param(30.0, 0, id="capacity-zero")],
)
def test_absent_memory_disabled(cooldown: float, capacity: int) -> None:
    cooldown_ = KidCooldown(cooldown, absent_capacity=capacity)
    cooldown_.remember_absent("bogus", 0.0)
    assert len(cooldown_) == 0
    assert not cooldown_.recently_absent("bogus", 0.0)
