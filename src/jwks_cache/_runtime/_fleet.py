"""The fleet: instances sharing one store fetch each key set about once per period between them.

Every fleet concern lives here: the refresh leases, waiting for the set another instance is
fetching (by its notice or by polling the store), adopting the sets others announce, and sharing
the sets this instance fetched. A store outage never fails a lookup: each instance then fetches
for itself. The fleet exists only for a :class:`~jwks_cache.SharedStore` whose ``shared`` flag is
on (:func:`fleet_store`); its store calls go through the Registry's :class:`Persistence`, so they
count, log and degrade the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable

import anyio

from .._clock import Clock, move_on_at
from .._errors import StoreError
from .._stores import SharedStore, SnapshotStore
from ._persistence import Persisted, Persistence
from ._published import Published

__all__ = ["DatesLeases", "Fleet", "Fleeted", "fleet_store", "poll_interval"]

#: How often an instance waiting for another's fetch reads the store, when no notice came: a
#: tenth of the retry deadline, between 10 ms and 250 ms. A lost notice costs at most that.
_POLL_FRACTION: Final = 0.1
_POLL_MIN: Final = 0.01  # seconds
_POLL_MAX: Final = 0.25  # seconds
_MAX_POLLS: Final = 10_000  # a backstop only: the wait ends by its deadline long before
#: Redis reports a lease's age in whole milliseconds: date its holder up to one earlier
_LEASE_AGE_RESOLUTION: Final = 0.001


class Fleeted(Persisted, Protocol):
    """What the fleet needs of a provider beyond persistence's: when it refreshes next, and adoption."""

    @property
    def next_refresh_mono(self) -> float: ...
    def adopt(self, published: Published) -> None: ...


@runtime_checkable
class DatesLeases(Protocol):
    """A shared store that can date a lease's holder (see :class:`~jwks_cache.SharedStore`): optional."""

    async def lease_age(self, tenant: str, provider: str, *, purpose: str = "refresh") -> float | None: ...


def fleet_store(store: SnapshotStore | None) -> SharedStore | None:
    """The store as a fleet's, when it is a SharedStore configured as shared; else None (local use)."""
    if isinstance(store, SharedStore) and store.shared:
        return store
    return None


def poll_interval(deadline: float) -> float:
    """Seconds between store reads while waiting for another instance's set (see ``_POLL_FRACTION``)."""
    return max(_POLL_MIN, min(_POLL_MAX, deadline * _POLL_FRACTION))


def _refresh_lease_ttl(provider: Fleeted) -> float:
    cfg = provider.config
    return max(cfg.min_ttl / 2, cfg.retry.deadline + 1.0)


class Fleet:
    """One Registry's part in a fleet: its leases, the notices it waits on, the sets it shares."""

    def __init__(
        self,
        persistence: Persistence,
        store: SharedStore,
        clock: Clock,
        registered: Callable[[str, str], Fleeted | None],
    ) -> None:
        self._persistence = persistence
        self.store = store  # the registry runs its listener
        self._clock = clock
        self._registered = registered  # (tenant, provider) -> the provider registered now, if any
        # per provider, only while needed: the lease a fetch of ours holds (released if it fails),
        # and the event a wait for another instance's set sleeps on (set by that instance's notice)
        self._leases: dict[Fleeted, str] = {}
        self._notices: dict[Fleeted, anyio.Event] = {}

    def forget(self, provider: Fleeted) -> None:
        """``provider`` closed: drop what the fleet kept for it (its lease then lapses in the store)."""
        self._leases.pop(provider, None)
        self._notices.pop(provider, None)

    def _notice_for(self, provider: Fleeted) -> anyio.Event:
        notice = self._notices.get(provider)
        if notice is None:
            notice = self._notices[provider] = anyio.Event()
        return notice

    async def on_notice(self, tenant: str, provider: str) -> None:
        """The store's listener heard another instance announce a set: adopt it, and wake our waiters."""
        found = self._registered(tenant, provider)
        if found is None:
            return
        published = await self._persistence.load(found)
        if published is not None:
            found.adopt(published)
        notice = self._notices.pop(found, None)
        if notice is not None:
            notice.set()

    async def adopt_or_lease(
        self, provider: Fleeted, *, unconditional: bool, since: float | None, wait_until: float
    ) -> Published | float | None:
        """Fleet mode: None means "fetch upstream" (we hold the lease, or the holder's set did not come
        in time); a Published is the fleet's set; a float is the monotonic time to try again (another
        instance holds the lease and nothing newer exists yet), so a due refresh neither spins nor
        counts as a refresh.

        ``since`` (wall clock) is what the caller needs: a set fetched at or after it (``refresh()``),
        or, for unknown-kid refreshes, the moment the lookup started; None for the scheduler's due
        refreshes, which are content with the fleet's latest set. ``wait_until`` (monotonic) bounds
        any wait for another instance, leaving the flight time for a fetch of our own.

        Periodic refreshes share one lease per ``min_ttl / 2``; unknown-kid refreshes take a second
        lease held for the whole ``unknown_kid_cooldown``, so a bogus kid sprayed at every instance
        costs one upstream request per cooldown fleet-wide; ``refresh()`` calls that find the
        periodic set older than the call share a third, short one. A store outage returns None: each
        instance then fetches for itself and never fails because of Redis.
        """
        if unconditional:
            if provider.config.unknown_kid_cooldown <= 0:
                return None
            return await self._unknown_kid(provider, since, wait_until)
        if since is not None:
            return await self._refresh_since(provider, since, wait_until)
        return await self._due_refresh(provider, wait_until)

    async def _due_refresh(self, provider: Fleeted, wait_until: float) -> Published | float | None:
        """The scheduler's refresh: any set newer than ours will do, and the fleet's latest is enough."""
        ttl = _refresh_lease_ttl(provider)
        # captured before the first await: a notice (and the adoption it causes) may arrive during any
        # of the Redis round trips below, and must not be missed
        before = provider.published
        if await self._take(provider, "refresh", ttl, keep=True):
            return None
        newer = await self._newer_than_ours(provider)
        if newer is None and provider.published is not before and provider.published is not None:
            return provider.published  # adopted from a notice while we asked Redis
        current = provider.published
        if newer is None and current is not None and self._clock.time() - current.wall_fetched_at < ttl:
            # the fleet refreshed within this lease and we hold that set already: look again later
            return self._clock.monotonic() + max(1.0, ttl / 2)
        if newer is not None:
            return newer
        # the lease holder is fetching: its notice, a poll of the store or our timeout ends the wait
        floor = -math.inf if before is None else math.nextafter(before.wall_fetched_at, math.inf)
        return await self._await_set(provider, accept_from=floor, landed_at=None, until=wait_until)

    async def _unknown_kid(self, provider: Fleeted, since: float | None, wait_until: float) -> Published | float | None:
        """One fleet-wide unknown-kid refresh per cooldown; the others wait for its set, never refuse early.

        The set that answers a lookup is the one the lease holder fetched: fetched no earlier than
        the lease was taken. If it landed already (a bogus kid sprayed at every instance), it is
        the answer at once; if it is on its way (a key rotation seen everywhere at once), we wait
        for it, by notice or by polling the store, and fetch for ourselves only if it does not come.
        """
        before = provider.published
        taken_at = await self._lease_taken_at(provider, "unknown-kid", provider.config.unknown_kid_cooldown)
        if taken_at is None:
            return None  # the lease is ours (or the store is down): fetch
        if math.isinf(taken_at):  # a holder we cannot date: wait for a set as new as the lookup
            taken_at = self._clock.time() if since is None else since
        found = await self._await_set(provider, accept_from=taken_at, landed_at=None, until=wait_until)
        if found is before and found is not None:
            return self._clock.monotonic()  # the fleet's answer is the set we hold: nothing to record
        return found

    async def _refresh_since(self, provider: Fleeted, since: float, wait_until: float) -> Published | float | None:
        """``refresh()``: a set fetched at or after ``since``; adopted if another instance fetches one."""
        before = provider.published
        if await self._take(provider, "refresh", _refresh_lease_ttl(provider), keep=True):
            return None
        newer = await self._newer_than_ours(provider)
        newest = newer if newer is not None else provider.published
        if newest is not None and newest.wall_fetched_at >= since:
            return newest if newest is not before else provider.next_refresh_mono
        # the periodic set is older than the call: one instance fetches for every refresh() in flight
        taken_at = await self._lease_taken_at(provider, "refresh-now", provider.config.retry.deadline + 1.0)
        if taken_at is None:
            return None
        landed_at = None if math.isinf(taken_at) else taken_at
        found = await self._await_set(provider, accept_from=since, landed_at=landed_at, until=wait_until)
        if found is before and found is not None:
            return provider.next_refresh_mono
        return found

    async def _take(self, provider: Fleeted, purpose: str, ttl: float, *, keep: bool) -> bool:
        """Try to take a lease; True means "fetch upstream" (ours, or the store is down).

        ``keep``: remember the token so a failed fetch releases the lease (the periodic one only).
        """
        cfg = provider.config
        try:
            token = await self._persistence.call(
                "acquire_lease", self.store.acquire_lease, cfg.tenant, cfg.provider, ttl, purpose=purpose
            )
        except StoreError as exc:
            self._persistence.failed(f"lease for {cfg.tenant}/{cfg.provider} unavailable, fetching locally: {exc}")
            return True
        if token is not None and keep:
            self._leases[provider] = token  # released early only if the fetch fails
        return token is not None

    async def _lease_taken_at(self, provider: Fleeted, purpose: str, ttl: float) -> float | None:
        """Take the lease (None: fetch upstream), or the wall-clock time its holder took it.

        ``-inf`` when the holder cannot be dated (a store without ``lease_age``, a holder of an older
        release). A lease that lapsed between the two round trips is taken again.
        """
        cfg = provider.config
        lease_age = self.store.lease_age if isinstance(self.store, DatesLeases) else None
        for _ in range(2):
            if await self._take(provider, purpose, ttl, keep=False):
                return None
            if lease_age is None:
                return -math.inf
            asked_at = self._clock.time()  # before the round trip: the holder's fetch cannot predate this
            try:
                age = await self._persistence.call("lease_age", lease_age, cfg.tenant, cfg.provider, purpose=purpose)
            except StoreError as exc:
                self._persistence.failed(f"lease of {cfg.tenant}/{cfg.provider} unreadable, fetching locally: {exc}")
                return None
            if age is not None:
                return asked_at - float(age) - _LEASE_AGE_RESOLUTION
        return -math.inf

    async def _await_set(
        self, provider: Fleeted, *, accept_from: float, landed_at: float | None, until: float
    ) -> Published | None:
        """The first set fetched at or after ``accept_from`` (wall clock) that a notice brings or a poll
        of the store finds, or None ("fetch upstream yourself") at ``until`` (monotonic).

        With ``landed_at``: a set fetched at or after it but before ``accept_from`` means the lease
        holder's fetch landed before we asked, so no newer set is coming: None at once. A lost
        notice costs at most one poll interval.
        """
        poll = poll_interval(provider.config.retry.deadline)
        for _ in range(_MAX_POLLS):
            notice = self._notice_for(provider)  # before the read: a notice during it must still wake us
            newer = await self._newer_than_ours(provider)
            newest = newer if newer is not None else provider.published
            if newest is not None and newest.wall_fetched_at >= accept_from:
                return newest
            if newest is not None and landed_at is not None and newest.wall_fetched_at >= landed_at:
                return None
            now = self._clock.monotonic()
            if now >= until:
                return None
            with move_on_at(self._clock, min(until, now + poll)):
                await notice.wait()
        return None

    async def _newer_than_ours(self, provider: Fleeted) -> Published | None:
        candidate = await self._persistence.load(provider)
        current = provider.published
        if candidate is None or (current is not None and candidate.wall_fetched_at <= current.wall_fetched_at):
            return None
        if self._clock.monotonic() >= candidate.expires_mono:
            return None
        return candidate

    async def after_upstream_fetch(self, provider: Fleeted, published: Published) -> None:
        """Fleet mode: share the new set (save + notice) and keep the lease until it expires."""
        snapshot = self._persistence.snapshot_of(provider, published)
        if snapshot is None:
            return
        async with self._persistence.turn(provider.config.key):
            if provider.closed:
                return  # unregistered (its delete may have gone first) or replaced: share nothing
            await self._persistence.write("publish", self.store.publish, snapshot)

    async def release(self, provider: Fleeted) -> None:
        token = self._leases.pop(provider, None)
        if token is None:
            return
        cfg = provider.config
        try:
            await self._persistence.call("release_lease", self.store.release_lease, cfg.tenant, cfg.provider, token)
        except StoreError as exc:
            self._persistence.failed(f"cannot release lease of {cfg.tenant}/{cfg.provider}: {exc}")
