"""Snapshots in and out of a store (fleet coordination over a shared one is ``_fleet``'s).

Persistence must never make a lookup fail: every store error is logged and counted here and the
registry carries on with what it has in memory. Writes go through one persister task so saves of
one provider cannot overtake each other, and the exit flush is bounded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.abc import TaskStatus

from .._clock import Clock
from .._config import ProviderConfig
from .._errors import ResponseTooLargeError, StoreError
from .._http._freshness import kept_for_revalidation, usable_validators
from .._http._policy import check_url
from .._models import Snapshot, StoreStatus
from .._stores import SnapshotStore
from ._boundary import as_library_error
from ._published import Published
from ._refresh import Refresher

__all__ = ["Persisted", "Persistence", "Pings"]


class Persisted(Protocol):
    """What persistence needs of a provider: its registration and its set."""

    @property
    def closed(self) -> bool: ...
    @property
    def config(self) -> ProviderConfig: ...
    @property
    def refresher(self) -> Refresher: ...
    @property
    def published(self) -> Published | None: ...


@runtime_checkable
class Pings(Protocol):
    """A store that can tell whether all of it answers (RedisStore: every primary); optional."""

    async def ping(self) -> None: ...


log = logging.getLogger("jwks_cache")

_T = TypeVar("_T")
_PROBE_MIN: Final = 1.0  # seconds between probes of a degraded store, doubled per failure
_PROBE_MAX: Final = 5.0  # seconds; bounds how late a registry notices that its store is back
#: a name no registration is likely to have: the probe only asks the store to answer, not to find
_PROBE_NAMES: Final = ("jwks-cache", "_probe")


class Persistence:
    """The Registry's link to its store: restore, ordered saves, store health."""

    def __init__(self, store: SnapshotStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
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
        try:
            if isinstance(self.store, Pings):
                await self.call("ping", self.store.ping)
            else:
                await self.call("load", self.store.load, *_PROBE_NAMES)
        except StoreError as exc:
            self.failed(f"still unavailable: {exc}", quiet=True)
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
            # logged, not counted against the store: it answered, with bytes we refuse (a poisoned
            # entry must not show a working store as degraded until the next probe)
            log.warning(
                "jwks-cache: store: ignoring stored snapshot of %s/%s: %s",
                cfg.tenant,
                cfg.provider,
                error,
                exc_info=exc if error is not exc else None,  # a traceback for what no check anticipated
            )
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
            fetched_mono=now_mono - (now_wall - fetched_at),
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
            snapshot = await self.call("load", self.store.load, cfg.tenant, cfg.provider)
        except StoreError as exc:
            self.failed(f"cannot load snapshot of {cfg.tenant}/{cfg.provider}: {exc}")
            return None
        return self.published_from(provider, snapshot) if snapshot is not None else None

    async def load_all(self) -> dict[tuple[str, str], Snapshot] | None:
        """Every stored snapshot by name; None when the store failed (logged)."""
        try:
            snapshots = await self.call("load_all", self.store.load_all)
        except StoreError as exc:
            self.failed(f"cannot restore snapshots: {exc}")
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
            async with self.turn(key):
                # judged once it is our turn: an unregister (which drops the entry) or a newer set
                # may have come while a write of this provider went first
                if self._dirty.get(key) is not snapshot:
                    continue
                await self.save(snapshot)
            if self._dirty.get(key) is snapshot:  # a cancelled save stays dirty for the exit flush
                del self._dirty[key]

    async def save(self, snapshot: Snapshot) -> None:
        await self.write("save", self.store.save, snapshot)

    async def write(self, what: str, operation: Callable[[Snapshot], Awaitable[None]], snapshot: Snapshot) -> None:
        """One write of a snapshot (``save``, or the fleet's ``publish``): counted, or logged as failed."""
        try:
            await self.call(what, operation, snapshot)
            self.saves += 1
        except StoreError as exc:
            self.failed(f"cannot {what} snapshot of {snapshot.tenant}/{snapshot.provider}: {exc}")

    async def delete(self, tenant: str, provider: str) -> None:
        """Forget the provider's snapshot for good; returns once no earlier write of it can land after.

        The caller closes the provider first, so it cannot mark a new set dirty; a save or publish
        already under way finishes before the delete is sent, and a queued one is dropped.
        """
        key = (tenant, provider)
        self._dirty.pop(key, None)
        async with self.turn(key):
            await self._delete_stored(tenant, provider)

    async def _delete_stored(self, tenant: str, provider: str) -> None:
        try:
            await self.call("delete", self.store.delete, tenant, provider)
        except StoreError as exc:
            self.failed(f"cannot delete snapshot of {tenant}/{provider}: {exc}")

    async def call(self, what: str, operation: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
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
    async def turn(self, key: tuple[str, str]) -> AsyncIterator[None]:
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
        self.failed(f"a background task failed: {error}")

    def failed(self, message: str, *, quiet: bool = False, cause: BaseException | None = None) -> None:
        """Count and log a store failure; the store is degraded until a probe finds it answering.

        ``cause``: an unexpected exception behind it, whose traceback the log line carries.
        """
        self.errors += 1
        self.last_error = message
        if self.degraded_since is None:
            self.degraded_since = self._clock.time()
            self._degraded.set()
        log.log(logging.DEBUG if quiet else logging.WARNING, "jwks-cache: store: %s", message, exc_info=cause)


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
