"""One registered provider: its current keys, its refresh loop and its single-flight fetches."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._clock import Clock, fail_at, move_on_at
from .._config import ProviderConfig
from .._errors import FetchError, JwksCacheError, KeyNotFoundError, SecurityError
from .._http._cadence import KidCooldown, failure_delay, refresh_delay
from .._jose._jwks import Key, KeyEntry, KeyTable, key_fits_alg, misfit
from .._telemetry import log_refresh_failed, log_stale_ended, log_stale_started
from ._boundary import as_library_error
from ._published import Published
from ._refresh import Refresher

if TYPE_CHECKING:
    from ._fleet import Fleet
    from ._scheduler import Scheduler

__all__ = ["Counters", "Provider", "ProviderHost"]

log = logging.getLogger("jwks_cache")

_NOTHING_MADE: Final[dict[str, Any]] = {}  # before the first set; never written (tables fill their own)
_WAIT_MARGIN = 1.0  # seconds a flight gets beyond its retry deadlines before it is cut off
_SHOWN_KID_CHARS: Final = 64  # of an untrusted kid quoted in an error message
_REFRESH_ROUNDS: Final = 3  # flights refresh() joins or starts before it settles for what it has


class ProviderHost:
    """What every provider of one Registry shares: one reference per provider instead of seven.

    A registry may hold tens of thousands of providers; per-provider bound methods and closures
    for these cost more than the provider's own state.
    """

    __slots__ = ("clock", "fleet", "gone_error", "on_publish", "rng", "scheduler", "spawn")

    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random,
        spawn: Callable[..., object],
        scheduler: Scheduler,
        gone_error: Callable[[str, str], JwksCacheError],
        on_publish: Callable[[Provider, Published], None] | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.spawn = spawn  # the Registry's task group: flights are its tasks, not a provider's
        self.scheduler = scheduler  # told whenever a next_refresh_mono changes or a flight lands
        self.gone_error = gone_error  # (tenant, provider) -> the error for a closed registration
        self.on_publish = on_publish
        self.fleet = fleet  # fleet mode: leases, notices and sharing over the shared store


class _Flight:
    """One shared fetch; waiters hold a reference and read the outcome after ``done``."""

    __slots__ = ("background", "conditional", "deadline", "done", "error", "ok", "since")

    def __init__(self, deadline: float, conditional: bool, background: bool, since: float | None = None) -> None:
        self.done = anyio.Event()
        self.deadline = deadline
        self.conditional = conditional
        self.background = background  # started by the scheduler, counted against its bound
        # fleet mode: the wall-clock time the set must be at least as new as (refresh(), unknown
        # kids); None for the scheduler's refreshes, which the fleet's latest set satisfies
        self.since = since
        self.error: JwksCacheError | None = None
        self.ok = False


def _fresh_copy(exc: JwksCacheError) -> JwksCacheError:
    """A new exception per waiter: one object raised in many tasks would share a mutating traceback."""
    clone = copy.copy(exc)
    clone.__cause__ = exc
    clone.__traceback__ = None
    return clone


class Counters:
    """A provider's cumulative counts, read by status and metrics.

    One small struct, so the only provider state another module writes is a count: the
    Registry's warm lookup path adds its hits here without a method call.
    """

    __slots__ = (
        "hits",
        "misses",
        "not_modified",
        "refresh_errors",
        "refreshes",
        "stale_serves",
        "unknown_kid_rejections",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale_serves = 0
        self.refreshes = 0
        self.refresh_errors = 0
        self.not_modified = 0  # refreshes answered 304 (counted in refreshes too)
        self.unknown_kid_rejections = 0


class Provider:
    """Owns one registration's keys and schedule; the Registry's scheduler and task group run it.

    ``__slots__`` and lazily made helpers (the kid cooldown, the fleet notice event) because a
    registry may hold tens of thousands of these.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_flight_scope",
        "_follow_up_scope",
        "_host",
        "_published",
        "_stale_logged",
        "closed",
        "config",
        "counts",
        "error_count",
        "flight",
        "last_error",
        "last_failure_mono",
        "made",
        "next_refresh_mono",
        "refresher",
        "warm_until_mono",
    )

    def __init__(
        self,
        config: ProviderConfig,
        refresher: Refresher,
        host: ProviderHost,
        *,
        published: Published | None = None,
    ) -> None:
        self.config = config
        self.refresher = refresher
        self._host = host
        self._clock = host.clock  # read on every lookup: one hop, not two
        self.published = published
        self.closed = False
        self._flight_scope: anyio.CancelScope | None = None
        self._follow_up_scope: anyio.CancelScope | None = None  # fleet mode, after a flight's waiters
        self.flight: _Flight | None = None
        self.next_refresh_mono = -math.inf if published is None else self._after_success(published)
        self._cooldown: KidCooldown | None = None  # made on the first unknown kid
        self.last_error: JwksCacheError | None = None
        self.last_failure_mono = -math.inf
        self.error_count = 0
        self.counts = Counters()  # cumulative; the Registry's warm path counts hits here
        self._stale_logged: Published | None = None  # the set whose stale serving was logged

    @property
    def published(self) -> Published | None:
        """The current key set, swapped whole and never mutated."""
        return self._published

    @published.setter
    def published(self, published: Published | None) -> None:
        # the warm lookup path reads these two instead: one attribute hop and one None test fewer.
        # In an order that a reader on another thread (jwks_cache.sync) never sees a new expiry
        # beside the old set's keys: closed first, keys swapped, then the new expiry
        self.warm_until_mono = -math.inf
        self._published = published
        self.made = published.table.made if published is not None else _NOTHING_MADE
        if published is not None:
            self.warm_until_mono = published.expires_mono

    # -- lifecycle -------------------------------------------------------------------------------

    def may_refresh_for_kid(self, now: float) -> bool:
        """Whether an unknown-kid or bad-signature refresh may start now, without making the
        cooldown (a reader on another thread must not replace the one the loop is using)."""
        cooldown = self._cooldown
        return cooldown is None or cooldown.may_refresh(now)

    @property
    def cooldown(self) -> KidCooldown:
        if self._cooldown is None:
            self._cooldown = KidCooldown(self.config.unknown_kid_cooldown)
        return self._cooldown

    def close(self) -> None:
        """Stop for good: no more wake-ups, and the flight in progress (if any) is cancelled.

        A fetch that lands in the same moment is not kept (see ``_fly_in_scope``): once closed, the
        provider writes nothing to the store, so an unregistered tenant's keys cannot come back.
        """
        self.closed = True
        self._host.scheduler.discard(self)  # its pending wake-up is dead weight in the heap
        for scope in (self._flight_scope, self._follow_up_scope):
            if scope is not None:
                scope.cancel()

    def _reschedule(self, when: float) -> None:
        self.next_refresh_mono = when
        self._host.scheduler.schedule(self)

    def _closed_error(self) -> JwksCacheError:
        return self._host.gone_error(self.config.tenant, self.config.provider)

    # -- single flight ---------------------------------------------------------------------------

    def start_flight(self, *, conditional: bool, background: bool = False, since: float | None = None) -> _Flight:
        if self.flight is not None:
            return self.flight
        if self.closed:
            raise self._closed_error()
        deadline = self._clock.monotonic() + self._flight_budget()
        flight = self.flight = _Flight(deadline, conditional, background, since)
        try:
            self._host.spawn(
                self._fly, flight, name=f"jwks-cache fetch {self._name}", on_failure=self._record_task_failure
            )
        except BaseException:
            self.flight = None  # a closing registry refused it: leave no flight that nobody runs
            raise
        return flight

    def _flight_budget(self) -> float:
        # discovery may run its own retry sequence before the JWKS one, and in fleet mode a flight
        # may first wait (up to one deadline) for the lease holder's notice
        rounds = (1 if self.config.jwks_url is not None else 2) + (1 if self._host.fleet is not None else 0)
        return rounds * self.config.retry.deadline + _WAIT_MARGIN

    async def _fly(self, flight: _Flight) -> None:
        try:
            fetched: Published | None = None
            with anyio.CancelScope() as scope:
                self._flight_scope = scope
                if self.closed:
                    scope.cancel()  # closed between start_soon and now
                fetched = await self._fly_in_scope(flight)
            if self._flight_scope is scope:  # a later flight may have started once our waiters were released
                self._flight_scope = None
            if self._host.fleet is not None and not self.closed:
                with anyio.CancelScope() as follow_up:
                    self._follow_up_scope = follow_up
                    await self._fleet_follow_up(fetched, failed=flight.error is not None)
                if self._follow_up_scope is follow_up:
                    self._follow_up_scope = None
        finally:
            # the scheduler consumed our wake-up to start this flight (or we moved it), and a
            # background flight frees one of its slots: even when the follow-up failed, or the
            # provider would never be woken again and the slot would be lost for good
            self._host.scheduler.landed(self, flight.background)

    async def _fly_in_scope(self, flight: _Flight) -> Published | None:
        """Run the flight and release its waiters; returns a set fetched upstream (fleet mode shares it)."""
        fetched: Published | None = None
        try:
            # the flight, not each waiter, enforces the deadline: one timer releases every waiter
            # on time, where a cancel scope per waiter made a 10,000-caller stampede twice as slow
            try:
                with fail_at(self._clock, flight.deadline):
                    outcome, upstream = await self._obtain(flight)
            except TimeoutError:
                raise FetchError(
                    f"{self._name}: the key set fetch overran its deadline", url=self.refresher.jwks_url
                ) from None
        except Exception as exc:  # any failure of this flight is this provider's alone (see _boundary)
            error = as_library_error(exc, f"{self._name}: refresh", url=self.refresher.jwks_url)
            self._record_failure(error, unexpected=exc if error is not exc else None)
            flight.error = error
        else:
            if self.closed:
                # unregistered or replaced as the fetch landed, past its last cancellation point:
                # keep and publish nothing; the waiters get the closed error (and follow a successor)
                return None
            if isinstance(outcome, Published):
                self._record_success(outcome)
                fetched = outcome if upstream else None
            elif flight.conditional:  # fleet mode: the lease holder's set is ours already
                self._reschedule(outcome)
            flight.ok = True
        finally:
            if self.flight is flight:
                self.flight = None
            if not flight.ok and flight.error is None:
                flight.error = self._closed_error()
            flight.done.set()  # a crash or cancel still releases every waiter
        return fetched

    async def _fleet_follow_up(self, fetched: Published | None, *, failed: bool) -> None:
        """After the waiters are released: share a fetched set, or after a failure let another instance try.

        Outside the flight's deadline, so a slow store cannot turn a good fetch into a failure, and
        under a bound of its own (one retry deadline), so it cannot hold the scheduler's slot for long.
        A lease kept from an earlier fetch is released only by a failure, as before.
        """
        fleet = self._host.fleet
        assert fleet is not None
        with move_on_at(self._clock, self._clock.monotonic() + self.config.retry.deadline):
            if fetched is not None:
                await fleet.after_upstream_fetch(self, fetched)
            elif failed:
                await fleet.release(self)  # the lease kept for this fetch, if any

    async def _obtain(self, flight: _Flight) -> tuple[Published | float, bool]:
        """Fleet mode asks the store first (another instance may have just fetched); else go upstream.

        Returns the outcome and whether it came from upstream.
        """
        fleet = self._host.fleet
        if fleet is not None:
            # the flight's first retry deadline is for waiting on another instance; the rest is ours
            wait_until = flight.deadline - self._flight_budget() + self.config.retry.deadline
            adopted = await fleet.adopt_or_lease(
                self, unconditional=not flight.conditional, since=flight.since, wait_until=wait_until
            )
            if adopted is not None:
                return adopted, False
        published = await self.refresher.fetch(
            self.published, conditional=flight.conditional, background=flight.background
        )
        return published, True

    def adopt(self, published: Published) -> None:
        """Take a newer set announced by another instance (fleet mode) or restored from a store."""
        current = self.published
        if current is not None and published.wall_fetched_at <= current.wall_fetched_at:
            return  # never replace a newer in-memory set
        self.published = published
        if self._cooldown is not None:
            self._cooldown.forget_all()
        self._reschedule(self._after_success(published))

    def _record_success(self, published: Published) -> None:
        previous = self.published
        self.published = published
        self.counts.refreshes += 1
        self.error_count = 0
        if self._stale_logged is not None:
            self._stale_logged = None
            log_stale_ended(self.config, reason="refreshed")
        if published.revalidated:
            self.counts.not_modified += 1
        changed = previous is None or published.table is not previous.table
        if changed and self._cooldown is not None:  # a different key set: absent kids may exist now
            self._cooldown.forget_all()
        if self.last_error is not None:
            log.info(
                "jwks-cache %s/%s: keys refreshed after %s", self.config.tenant, self.config.provider, self.last_error
            )
        self.last_error = None
        self._reschedule(self._after_success(published))
        if self._host.on_publish is not None:
            self._host.on_publish(self, published)

    def _after_success(self, published: Published) -> float:
        cfg = self.config
        delay = refresh_delay(
            ttl=published.ttl,
            refresh_early=cfg.refresh_early,
            prefetch_jitter=cfg.prefetch_jitter,
            min_ttl=cfg.min_ttl,
            rng=self._host.rng,
        )
        return published.fetched_mono + delay

    def _record_failure(self, exc: JwksCacheError, *, unexpected: Exception | None = None) -> None:
        """``unexpected``: the exception ``exc`` was made from, when it was none of ours (its
        traceback goes into the log line: that is a bug or an input no check anticipated)."""
        self.counts.refresh_errors += 1
        self.error_count += 1
        self.last_error = exc
        now = self._clock.monotonic()
        self.last_failure_mono = now
        log_refresh_failed(self.config, exc, exc_info=unexpected)
        self._reschedule(now + failure_delay(self.error_count, min_ttl=self.config.min_ttl, rng=self._host.rng))

    def _record_task_failure(self, error: JwksCacheError) -> None:
        """A flight task failed outside the fetch (sharing the set with the fleet, say): the keys
        stay as they are, the failure shows in status, and the scheduler has already woken us."""
        self.error_count += 1
        self.last_error = error

    async def wait(self, flight: _Flight) -> None:
        """Wait for a flight, which ends by its deadline; cancelling the caller cancels nothing shared."""
        await flight.done.wait()
        if flight.error is not None:
            raise _fresh_copy(flight.error)

    # -- lookups -----------------------------------------------------------------------------------

    def lookup_nowait(self, kid: str, alg: str | None) -> Key:
        """The sync path: fresh or stale-window keys only, never I/O."""
        pub = self.published
        if pub is not None:
            now = self._clock.monotonic()
            if now < pub.stale_until_mono:
                entry = _pick(pub.table, kid, alg)
                if entry is not None:
                    self.counts.hits += 1
                    if now >= pub.expires_mono:
                        self._served_stale(pub, now)
                    return pub.table.jwk(entry)
        self.counts.misses += 1
        other = _other_alg(pub.table, kid, alg) if pub is not None else None
        raise KeyNotFoundError(f"{self._name}: {other or f'kid {_shown(kid)} is not cached'}")

    async def table(self) -> KeyTable:
        """The current usable set: fresh, stale within the window, or fetched now (single-flight)."""
        pub = self.published
        now = self._clock.monotonic()
        if pub is not None and now < pub.stale_until_mono:
            if now >= pub.expires_mono:
                self._served_stale(pub, now)
            return pub.table
        if self.last_error is not None:
            if pub is not None:  # past the stale window and refreshes fail: fail closed, the loop retries
                if self._stale_logged is not None:
                    self._stale_logged = None
                    log_stale_ended(self.config, reason="window over")
                raise FetchError(
                    f"{self._name}: keys unavailable (stale window over): {self.last_error}",
                    url=self.refresher.jwks_url,
                ) from self.last_error
            if now < self.last_failure_mono + self.config.negative_cache_ttl:
                raise _fresh_copy(self.last_error)
        await self.wait(self.flight or self.start_flight(conditional=True))
        pub = self.published
        if pub is not None and self._clock.monotonic() < pub.stale_until_mono:
            return pub.table
        raise FetchError(f"{self._name}: keys unavailable", url=self.refresher.jwks_url)

    async def served(self) -> Published:
        """The set :meth:`table` serves, with its freshness bookkeeping (for the Registry's views)."""
        table = await self.table()
        pub = self.published  # table() returns the current set's table, with no await after reading it
        if pub is None or pub.table is not table:
            raise FetchError(f"{self._name}: keys unavailable", url=self.refresher.jwks_url)
        return pub

    def _served_stale(self, pub: Published, now: float) -> None:
        self.counts.stale_serves += 1
        if self._stale_logged is not pub:  # one line per stale episode, not one per lookup
            self._stale_logged = pub
            log_stale_started(self.config, expired_for=now - pub.expires_mono, error=self.last_error)

    async def get_key(self, kid: str, alg: str | None) -> Key:
        try:  # inline, not a helper: each frame here is resumed for every waiter of a cold stampede
            table = await self.table()
        except JwksCacheError:
            self.counts.misses += 1  # no usable set: a miss, or outages would vanish from the hit ratio
            raise
        entry = _pick(table, kid, alg)
        if entry is None:
            entry = await self.refresh_for_unknown_kid(kid, alg)
            assert self.published is not None  # it just served the entry
            table = self.published.table  # the entry's table: no await since it was picked from it
        self.counts.hits += 1  # an unknown kid answered after all is a hit, or hits + misses would undercount
        return table.jwk(entry)

    async def refresh_for_unknown_kid(self, kid: str, alg: str | None) -> KeyEntry:
        """At most one refresh per cooldown for kids the set lacks; the rest fail at once.

        A kid is remembered as absent only when a set at least as new as the lookup lacks it: in
        fleet mode the set we hold may predate a rotation another instance is fetching right now.
        """
        now, started = self._clock.monotonic(), self._clock.time()
        cooldown = self.cooldown
        if cooldown.recently_absent(kid, now):
            return self._reject(kid, alg)
        if cooldown.may_refresh(now):
            cooldown.note_refresh(now)
            if self.flight is not None and self.flight.conditional:
                # a revalidation in flight may be answered 304 by a CDN that hides the rotation:
                # let it land, then ask unconditionally if the kid is still missing
                with contextlib.suppress(FetchError, SecurityError):
                    await self.wait(self.flight)
                pub = self.published
                entry = _pick(pub.table, kid, alg) if pub is not None else None
                if entry is not None:
                    return entry
            flight = self.flight or self.start_flight(conditional=False, since=started)
        elif self.flight is not None:
            flight = self.flight  # a refresh is already on its way: share it rather than fail
        else:
            return self._reject(kid, alg)
        try:
            await self.wait(flight)
        except (FetchError, SecurityError) as exc:
            self.counts.misses += 1
            raise KeyNotFoundError(f"{self._name}: kid {_shown(kid)} unknown and the refresh failed: {exc}") from exc
        pub = self.published
        entry = _pick(pub.table, kid, alg) if pub is not None else None
        if entry is None:
            if pub is not None and pub.wall_fetched_at >= started:
                cooldown.remember_absent(kid, self._clock.monotonic())
            return self._reject(kid, alg)
        return entry

    async def candidates(self, kid: str | None, alg: str, *, counted: bool = True) -> tuple[KeyEntry, ...]:
        """Keys that may verify a token with this kid/alg; an unknown kid follows the cooldown rules.

        ``counted=False`` for a second look within one lookup (verify's retry after a refresh).
        """
        try:
            table = await self.table()
        except JwksCacheError:
            if counted:
                self.counts.misses += 1  # no usable set: a miss, as in get_key
            raise
        found = table.candidates(kid, alg)
        if found:
            if counted:
                self.counts.hits += 1
            return found
        if kid is None:
            self.counts.misses += 1
            raise KeyNotFoundError(f"{self._name}: no key fits a kid-less {alg} token")
        entry = await self.refresh_for_unknown_kid(kid, alg)
        if counted:
            self.counts.hits += 1  # found after all, as get_key counts it
        return (entry,)

    async def refresh_after_bad_signature(self) -> bool:
        """One throttled, unconditional refresh: the IdP may have replaced a key under the same kid."""
        now = self._clock.monotonic()
        if not self.cooldown.may_refresh(now):
            return False
        self.cooldown.note_refresh(now)
        try:
            await self.wait(self.flight or self.start_flight(conditional=False, since=self._clock.time()))
        except (FetchError, SecurityError):
            return False
        return True

    def _reject(self, kid: str, alg: str | None) -> KeyEntry:
        self.counts.misses += 1
        self.counts.unknown_kid_rejections += 1
        pub = self.published
        other = _other_alg(pub.table, kid, alg) if pub is not None else None
        raise KeyNotFoundError(f"{self._name}: {other or f'no usable key with kid {_shown(kid)}'}")

    async def refresh(self) -> None:
        """Join the fetch in progress or start a conditional one; raise its error.

        Returns with a set at least as new as the call. In fleet mode a joined flight may end
        without one (a due refresh content with the fleet's set, an unknown-kid flight that found
        the fleet's answer): then a flight of our own asks for one.
        """
        since = self._clock.time()
        for _ in range(_REFRESH_ROUNDS):
            await self.wait(self.flight or self.start_flight(conditional=True, since=since))
            pub = self.published
            if self._host.fleet is None or (pub is not None and pub.wall_fetched_at >= since):
                return

    @property
    def _name(self) -> str:
        return f"{self.config.tenant}/{self.config.provider}"


def _shown(kid: str) -> str:
    """A kid for an error message: it comes from an untrusted token header and lands in logs, so it
    is escaped (repr) and cut short rather than echoed whole (a header may carry kilobytes)."""
    return repr(kid) if len(kid) <= _SHOWN_KID_CHARS else repr(kid[:_SHOWN_KID_CHARS]) + "..."


def _other_alg(table: KeyTable, kid: str, alg: str | None) -> str | None:
    """The message for a ``kid`` the set has, but for another algorithm ("key 'k' is for PS256, not RS256").

    "No usable key" would send whoever reads the log looking for a missing key that is there.
    """
    entry = table.by_kid.get(kid)
    if entry is None or alg is None:
        return None
    return f"key {_shown(kid)} {misfit(entry, alg)}"


def _pick(table: KeyTable, kid: str, alg: str | None) -> KeyEntry | None:
    entry = table.by_kid.get(kid)
    if entry is None or (alg is not None and not key_fits_alg(entry, alg)):
        return None
    return entry
