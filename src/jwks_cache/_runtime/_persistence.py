"""Snapshots in and out of a store, and fleet coordination over a shared one.

Persistence must never make a lookup fail: every store error is logged and counted here and the
registry carries on with what it has in memory. Writes go through one persister task so saves of
one provider cannot overtake each other, and the exit flush is bounded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from .._clock import Clock, move_on_at
from .._config import ProviderConfig
from .._errors import ResponseTooLargeError, StoreError
from .._http._freshness import kept_for_revalidation, usable_validators
from .._http._policy import check_url
from .._models import Snapshot, StoreStatus
from .._stores import SnapshotStore
from ._boundary import as_library_error
from ._published import Published
from ._refresh import Refresher

__all__ = ["Persisted", "Persistence", "poll_interval"]


class Persisted(Protocol):
    """What persistence and the fleet need of a provider: its registration, set and lease."""

    @property
    def closed(self) -> bool: ...
    @property
    def config(self) -> ProviderConfig: ...
    @property
    def refresher(self) -> Refresher: ...
    @property
    def published(self) -> Published | None: ...
    @property
    def next_refresh(self) -> float: ...
    @property
    def notice(self) -> anyio.Event: ...
    def keep_lease(self, token: str) -> None: ...
    def give_up_lease(self) -> str | None: ...


log = logging.getLogger("jwks_cache")

_T = TypeVar("_T")
_PROBE_MIN: Final = 1.0  # seconds between probes of a degraded store, doubled per failure
_PROBE_MAX: Final = 5.0  # seconds; bounds how late a registry notices that its store is back
#: a name no registration is likely to have: the probe only asks the store to answer, not to find
_PROBE_NAMES: Final = ("jwks-cache", "_probe")
#: How often an instance waiting for another's fetch reads the store, when no notice came: a
#: tenth of the retry deadline, between 10 ms and 250 ms. A lost notice costs at most that.
_POLL_FRACTION: Final = 0.1
_POLL_MIN: Final = 0.01  # seconds
_POLL_MAX: Final = 0.25  # seconds
_MAX_POLLS: Final = 10_000  # a backstop only: the wait ends by its deadline long before
#: Redis reports a lease's age in whole milliseconds: date its holder up to one earlier
_LEASE_AGE_RESOLUTION: Final = 0.001


def poll_interval(deadline: float) -> float:
    """Seconds between store reads while waiting for another instance's set (see ``_POLL_FRACTION``)."""
    return max(_POLL_MIN, min(_POLL_MAX, deadline * _POLL_FRACTION))


def _refresh_lease_ttl(provider: Persisted) -> float:
    cfg = provider.config
    return max(cfg.min_ttl / 2, cfg.retry.deadline + 1.0)


class Persistence:
    """The Registry's link to its store: restore, ordered saves, and the fleet lease."""

    def __init__(self, store: SnapshotStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
        self.shared: bool = bool(getattr(store, "shared", False))
        self._dirty: dict[tuple[str, str], Snapshot] = {}
        # the writes (save, publish, delete) of one provider take turns, first come first served: an
        # unregister's delete then lands after a save already under way, never before it
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._wake = anyio.Event()
        # one flush at a time: persist() and the exit flush must queue behind the persister's own,
        # or a slow save of an older set could land after a newer one and nothing would correct it
        self._flushing = anyio.Lock()
        self.errors = 0
        self.saves = 0
        self.last_error: str | None = None
        self.degraded_since: float | None = None  # wall-clock time of the first failure of this outage
        self._degraded = anyio.Event()  # set while degraded: wakes the prober

    # -- store health -------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def status(self) -> StoreStatus:
        since = self.degraded_since
        return StoreStatus(
            degraded=since is not None,
            errors=self.errors,
            last_error=self.last_error,
            degraded_since=datetime.fromtimestamp(since, tz=UTC) if since is not None else None,
        )

    def _recovered(self) -> None:
        if self.degraded_since is not None:
            self.degraded_since = None
            self._degraded = anyio.Event()
            log.info("jwks-cache: store: reachable again")

    async def watch(
        self, on_recovery: Callable[[], Awaitable[None]], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """While the store is degraded, probe it with a bounded backoff; call ``on_recovery`` once it answers.

        Lease and publish calls resume on their own with the next refresh; the probe makes recovery
        show in the status (and lets the registry catch up) even when nothing else calls the store.
        """
        task_status.started()
        while True:
            await self._degraded.wait()
            backoff = _PROBE_MIN
            while not await self._probe_after(backoff):
                backoff = min(_PROBE_MAX, backoff * 2)
            await on_recovery()

    async def _probe_after(self, delay: float) -> bool:
        """Whether the whole store answers after ``delay`` seconds.

        Only the probe ends a degradation: one call that worked says little about a cluster with a
        master down, whose other slots answer. A store with a ``ping()`` (RedisStore: every primary)
        is pinged; any other is asked for a snapshot nobody has.
        """
        await self._clock.sleep_until(self._clock.monotonic() + delay)
        ping = getattr(self.store, "ping", None)
        try:
            if ping is not None:
                await self._call("ping", ping)
            else:
                await self._call("load", self.store.load, *_PROBE_NAMES)
        except StoreError as exc:
            self._failed(f"still unavailable: {exc}", quiet=True)
            return False
        self._recovered()
        return True

    # -- snapshots <-> published ------------------------------------------------------------------

    def snapshot_of(self, provider: Persisted, published: Published) -> Snapshot | None:
        """The snapshot to persist, or None for ``no-store`` responses (RFC 9111 §5.2.2.5)."""
        if published.no_store:
            return None
        cfg = provider.config
        return Snapshot(
            tenant=cfg.tenant,
            provider=cfg.provider,
            jwks_url=published.url,
            body=published.body,
            etag=published.etag,
            last_modified=published.last_modified,
            fetched_at=published.wall_fetched_at,
            expires_at=published.wall_expires_at,
            issuer=cfg.issuer,
            rules=provider.refresher.rules,
            cache_headers=published.cache_headers,
        )

    def published_from(self, provider: Persisted, snapshot: Snapshot) -> Published | None:
        """A Published for a stored snapshot, or None when it must not be used for this registration."""
        cfg = provider.config
        if snapshot.issuer != cfg.issuer:
            return None  # registered for another issuer since (or a snapshot from before issuers were kept)
        if snapshot.rules is not None and snapshot.rules != provider.refresher.rules:
            return None  # fetched under other rules (a pin since removed, say): fetch under the new ones
        expected = cfg.jwks_url or provider.refresher.jwks_url
        if expected is not None and snapshot.jwks_url != expected:
            return None  # registered for another URL since: the snapshot is not this provider's keys
        try:
            _check_size(snapshot, cfg.max_response_bytes)
            if snapshot.jwks_url != cfg.jwks_url:  # the configured URL was judged at registration
                check_url(snapshot.jwks_url, provider.refresher.policy)
            table = provider.refresher.tables.parse(snapshot.body, url=snapshot.jwks_url, max_keys=cfg.max_keys)
        except Exception as exc:  # stored bytes are untrusted input: whatever they break, they are refused
            error = as_library_error(exc, "stored snapshot")
            self._failed(f"ignoring stored snapshot of {cfg.tenant}/{cfg.provider}: {error}", cause=exc)
            return None
        # a store is trusted with bytes, not with policy: the lifetime is clamped as a live fetch's
        # would be, a fetch time ahead of our clock (another host's, or a forged one) counts as now,
        # and validators that could not have come from a response are dropped
        now_wall, now_mono = self._clock.time(), self._clock.monotonic()
        fetched_at = min(snapshot.fetched_at, now_wall)
        ttl = min(max(0.0, snapshot.expires_at - snapshot.fetched_at), cfg.max_ttl)
        etag, last_modified = usable_validators(snapshot.etag, snapshot.last_modified)
        return Published(
            table=table,
            url=snapshot.jwks_url,
            fetched_at=now_mono - (now_wall - fetched_at),
            ttl=ttl,
            stale_while_error=cfg.stale_while_error,
            wall_fetched_at=fetched_at,
            etag=etag,
            last_modified=last_modified,
            no_store=False,
            cache_headers=kept_for_revalidation(snapshot.cache_headers),
        )

    async def load(self, provider: Persisted) -> Published | None:
        cfg = provider.config
        try:
            snapshot = await self._call("load", self.store.load, cfg.tenant, cfg.provider)
        except StoreError as exc:
            self._failed(f"cannot load snapshot of {cfg.tenant}/{cfg.provider}: {exc}")
            return None
        return self.published_from(provider, snapshot) if snapshot is not None else None

    async def load_all(self) -> dict[tuple[str, str], Snapshot] | None:
        """Every stored snapshot by name; None when the store failed (logged)."""
        try:
            snapshots = await self._call("load_all", self.store.load_all)
        except StoreError as exc:
            self._failed(f"cannot restore snapshots: {exc}")
            return None
        return {(s.tenant, s.provider): s for s in snapshots}

    # -- ordered saves ------------------------------------------------------------------------------

    def mark_dirty(self, provider: Persisted, published: Published) -> None:
        if provider.closed:
            return  # unregistered or replaced: nothing of it may reach the store any more
        snapshot = self.snapshot_of(provider, published)
        if snapshot is not None:
            self._dirty[provider.config.key] = snapshot
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The persister loop: saves the latest snapshot of each dirty provider, one at a time."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush_dirty()

    async def _flush_dirty(self) -> None:
        for _ in range(len(self._dirty) + 1):  # bounded: a save may add newer snapshots while it runs
            if not self._dirty:
                return
            key = next(iter(self._dirty))
            snapshot = self._dirty[key]
            async with self._turn(key):
                # judged once it is our turn: an unregister (which drops the entry) or a newer set
                # may have come while a write of this provider went first
                if self._dirty.get(key) is not snapshot:
                    continue
                await self.save(snapshot)
            if self._dirty.get(key) is snapshot:  # a cancelled save stays dirty for the exit flush
                del self._dirty[key]

    async def save(self, snapshot: Snapshot) -> None:
        try:
            await self._call("save", self.store.save, snapshot)
            self.saves += 1
        except StoreError as exc:
            self._failed(f"cannot save snapshot of {snapshot.tenant}/{snapshot.provider}: {exc}")

    async def delete(self, tenant: str, provider: str) -> None:
        """Forget the provider's snapshot for good; returns once no earlier write of it can land after.

        The caller closes the provider first, so it cannot mark a new set dirty; a save or publish
        already under way finishes before the delete is sent, and a queued one is dropped.
        """
        key = (tenant, provider)
        self._dirty.pop(key, None)
        async with self._turn(key):
            await self._delete_stored(tenant, provider)

    async def _delete_stored(self, tenant: str, provider: str) -> None:
        try:
            await self._call("delete", self.store.delete, tenant, provider)
        except StoreError as exc:
            self._failed(f"cannot delete snapshot of {tenant}/{provider}: {exc}")

    async def _call(self, what: str, operation: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """One store call, whose every failure is a StoreError.

        A store may be the caller's own code, or a client whose errors arrive wrapped in exception
        groups; whatever it raises, lookups carry on with what is in memory, so it is recorded here
        as a store failure instead of reaching the Registry's task group.
        """
        try:
            return await operation(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{what}: {as_library_error(exc, repr(self.store))}") from exc

    @asynccontextmanager
    async def _turn(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Hold the provider's write turn; the entry lives only while someone holds or awaits it."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[key]

    def record_failure(self, error: Exception) -> None:
        """A persistence loop (persister, prober, listener) failed and is being restarted."""
        self._failed(f"a background task failed: {error}")

    def _failed(self, message: str, *, quiet: bool = False, cause: BaseException | None = None) -> None:
        """Count and log a store failure; the store is degraded until a probe finds it answering.

        ``cause``: an unexpected exception behind it, whose traceback the log line carries.
        """
        self.errors += 1
        self.last_error = message
        if self.degraded_since is None:
            self.degraded_since = self._clock.time()
            self._degraded.set()
        log.log(logging.DEBUG if quiet else logging.WARNING, "jwks-cache: store: %s", message, exc_info=cause)

    # -- fleet mode -----------------------------------------------------------------------------------

    async def adopt_or_lease(
        self, provider: Persisted, *, unconditional: bool, since: float | None, wait_until: float
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

    async def _due_refresh(self, provider: Persisted, wait_until: float) -> Published | float | None:
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

    async def _unknown_kid(
        self, provider: Persisted, since: float | None, wait_until: float
    ) -> Published | float | None:
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

    async def _refresh_since(self, provider: Persisted, since: float, wait_until: float) -> Published | float | None:
        """``refresh()``: a set fetched at or after ``since``; adopted if another instance fetches one."""
        before = provider.published
        if await self._take(provider, "refresh", _refresh_lease_ttl(provider), keep=True):
            return None
        newer = await self._newer_than_ours(provider)
        newest = newer if newer is not None else provider.published
        if newest is not None and newest.wall_fetched_at >= since:
            return newest if newest is not before else provider.next_refresh
        # the periodic set is older than the call: one instance fetches for every refresh() in flight
        taken_at = await self._lease_taken_at(provider, "refresh-now", provider.config.retry.deadline + 1.0)
        if taken_at is None:
            return None
        landed_at = None if math.isinf(taken_at) else taken_at
        found = await self._await_set(provider, accept_from=since, landed_at=landed_at, until=wait_until)
        if found is before and found is not None:
            return provider.next_refresh
        return found

    async def _take(self, provider: Persisted, purpose: str, ttl: float, *, keep: bool) -> bool:
        """Try to take a lease; True means "fetch upstream" (ours, or the store is down).

        ``keep``: remember the token so a failed fetch releases the lease (the periodic one only).
        """
        cfg = provider.config
        store: Any = self.store
        try:
            token = await self._call(
                "acquire_lease", store.acquire_lease, cfg.tenant, cfg.provider, ttl, purpose=purpose
            )
        except StoreError as exc:
            self._failed(f"lease for {cfg.tenant}/{cfg.provider} unavailable, fetching locally: {exc}")
            return True
        if token is not None and keep:
            provider.keep_lease(token)  # released early only if the fetch fails
        return token is not None

    async def _lease_taken_at(self, provider: Persisted, purpose: str, ttl: float) -> float | None:
        """Take the lease (None: fetch upstream), or the wall-clock time its holder took it.

        ``-inf`` when the holder cannot be dated (a store without ``lease_age``, a holder of an older
        release). A lease that lapsed between the two round trips is taken again.
        """
        cfg = provider.config
        lease_age = getattr(self.store, "lease_age", None)
        for _ in range(2):
            if await self._take(provider, purpose, ttl, keep=False):
                return None
            if lease_age is None:
                return -math.inf
            asked_at = self._clock.time()  # before the round trip: the holder's fetch cannot predate this
            try:
                age = await self._call("lease_age", lease_age, cfg.tenant, cfg.provider, purpose=purpose)
            except StoreError as exc:
                self._failed(f"lease of {cfg.tenant}/{cfg.provider} unreadable, fetching locally: {exc}")
                return None
            if age is not None:
                return asked_at - float(age) - _LEASE_AGE_RESOLUTION
        return -math.inf

    async def _await_set(
        self, provider: Persisted, *, accept_from: float, landed_at: float | None, until: float
    ) -> Published | None:
        """The first set fetched at or after ``accept_from`` (wall clock) that a notice brings or a poll
        of the store finds, or None ("fetch upstream yourself") at ``until`` (monotonic).

        With ``landed_at``: a set fetched at or after it but before ``accept_from`` means the lease
        holder's fetch landed before we asked, so no newer set is coming: None at once. A lost
        notice costs at most one poll interval.
        """
        poll = poll_interval(provider.config.retry.deadline)
        for _ in range(_MAX_POLLS):
            notice = provider.notice  # before the read: a notice during it must still wake us
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

    async def _newer_than_ours(self, provider: Persisted) -> Published | None:
        candidate = await self.load(provider)
        current = provider.published
        if candidate is None or (current is not None and candidate.wall_fetched_at <= current.wall_fetched_at):
            return None
        if self._clock.monotonic() >= candidate.expires_at:
            return None
        return candidate

    async def after_upstream_fetch(self, provider: Persisted, published: Published) -> None:
        """Fleet mode: share the new set (save + notice) and keep the lease until it expires."""
        snapshot = self.snapshot_of(provider, published)
        if snapshot is None:
            return
        async with self._turn(provider.config.key):
            if provider.closed:
                return  # unregistered (its delete may have gone first) or replaced: share nothing
            try:
                store: Any = self.store
                await self._call("publish", store.publish, snapshot)
                self.saves += 1
            except StoreError as exc:
                self._failed(f"cannot publish snapshot of {snapshot.tenant}/{snapshot.provider}: {exc}")

    async def release(self, provider: Persisted) -> None:
        token = provider.give_up_lease()
        if token is None:
            return
        cfg = provider.config
        try:
            store: Any = self.store
            await self._call("release_lease", store.release_lease, cfg.tenant, cfg.provider, token)
        except StoreError as exc:
            self._failed(f"cannot release lease of {cfg.tenant}/{cfg.provider}: {exc}")


def _check_size(snapshot: Snapshot, max_bytes: int) -> None:
    """What enters from a store meets a fetch's limits: a FileStore without hmac_key holds any bytes."""
    if len(snapshot.body) > max_bytes:
        raise ResponseTooLargeError(
            f"{snapshot.jwks_url}: stored body of {len(snapshot.body)} bytes exceeds max_response_bytes ({max_bytes})",
            url=snapshot.jwks_url,
        )


class _Turn:
    """One provider's write turn: a FIFO lock, and how many hold or await it (0: forget it)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0
