"""Snapshots in and out of a store, and fleet coordination over a shared one.

Persistence must never make a lookup fail: every store error is logged and counted here and the
registry carries on with what it has in memory. Writes go through one persister task so saves of
one provider cannot overtake each other, and the exit flush is bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from ._boundary import as_library_error
from ._clock import Clock, fail_at
from ._errors import ResponseTooLargeError, StoreError
from ._freshness import kept_for_revalidation, usable_validators
from ._models import Snapshot
from ._published import Published
from ._security import check_url
from ._stores import SnapshotStore

if TYPE_CHECKING:
    from ._provider import Provider

__all__ = ["Persistence"]

log = logging.getLogger("jwks_cache")

_T = TypeVar("_T")


class Persistence:
    """The Registry's link to its store: restore, ordered saves, and the fleet lease."""

    def __init__(self, store: SnapshotStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
        self.shared: bool = bool(getattr(store, "shared", False))
        self._dirty: dict[tuple[str, str], Snapshot] = {}
        # unregistered providers whose snapshot a save already under way could write back
        self._deleted: set[tuple[str, str]] = set()
        self._wake = anyio.Event()
        # one flush at a time: persist() and the exit flush must queue behind the persister's own,
        # or a slow save of an older set could land after a newer one and nothing would correct it
        self._flushing = anyio.Lock()
        self.errors = 0
        self.saves = 0

    # -- snapshots <-> published ------------------------------------------------------------------

    def snapshot_of(self, provider: Provider, published: Published) -> Snapshot | None:
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

    def published_from(self, provider: Provider, snapshot: Snapshot) -> Published | None:
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

    async def load(self, provider: Provider) -> Published | None:
        cfg = provider.config
        try:
            snapshot = await self._call("load", self.store.load, cfg.tenant, cfg.provider)
        except StoreError as exc:
            self._failed(f"cannot load snapshot of {cfg.tenant}/{cfg.provider}: {exc}")
            return None
        return self.published_from(provider, snapshot) if snapshot is not None else None

    async def load_all(self) -> dict[tuple[str, str], Snapshot]:
        try:
            return {(s.tenant, s.provider): s for s in await self._call("load_all", self.store.load_all)}
        except StoreError as exc:
            self._failed(f"cannot restore snapshots: {exc}")
            return {}

    # -- ordered saves ------------------------------------------------------------------------------

    def mark_dirty(self, provider: Provider, published: Published) -> None:
        snapshot = self.snapshot_of(provider, published)
        if snapshot is not None:
            self._deleted.discard(provider.config.key)
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
            await self.save(snapshot)
            if self._dirty.get(key) is snapshot:  # a cancelled save stays dirty for the exit flush
                del self._dirty[key]
            if key in self._deleted:  # unregistered while we were saving: undo what we wrote
                await self._delete_stored(*key)

    async def save(self, snapshot: Snapshot) -> None:
        try:
            await self._call("save", self.store.save, snapshot)
            self.saves += 1
        except StoreError as exc:
            self._failed(f"cannot save snapshot of {snapshot.tenant}/{snapshot.provider}: {exc}")

    async def delete(self, tenant: str, provider: str) -> None:
        self._dirty.pop((tenant, provider), None)
        self._deleted.add((tenant, provider))
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

    def _failed(self, message: str, *, cause: BaseException | None = None) -> None:
        self.errors += 1
        log.warning("jwks-cache: store: %s", message, exc_info=cause)

    # -- fleet mode -----------------------------------------------------------------------------------

    async def adopt_or_lease(self, provider: Provider, *, unconditional: bool) -> Published | float | None:
        """Fleet mode: None means "we hold the lease, fetch upstream"; a Published is the fleet's set;
        a float is the monotonic time to try again (another instance holds the lease and nothing newer
        exists yet), so a due refresh neither spins nor counts as a refresh.

        Periodic refreshes share one lease per ``min_ttl / 2``; unknown-kid refreshes take a second
        lease held for the whole ``unknown_kid_cooldown``, so a bogus kid sprayed at every instance
        costs one upstream request per cooldown fleet-wide. A store outage returns None: each
        instance then fetches for itself and never fails because of Redis.
        """
        cfg = provider.config
        store: Any = self.store
        if unconditional:
            if cfg.unknown_kid_cooldown <= 0:
                return None
            purpose, ttl = "unknown-kid", cfg.unknown_kid_cooldown
        else:
            purpose, ttl = "refresh", max(cfg.min_ttl / 2, cfg.retry.deadline + 1.0)
        # captured before the first await: a notice (and the adoption it causes) may arrive during any
        # of the Redis round trips below, and must not be missed
        before, notice = provider.published, provider.notice
        try:
            token = await self._call(
                "acquire_lease", store.acquire_lease, cfg.tenant, cfg.provider, ttl, purpose=purpose
            )
        except StoreError as exc:
            self._failed(f"lease for {cfg.tenant}/{cfg.provider} unavailable, fetching locally: {exc}")
            return None
        if token is not None:
            if not unconditional:
                provider.lease_token = token  # released early only if the fetch fails
            return None
        newer = await self._newer_than_ours(provider)
        if newer is None and provider.published is not before and provider.published is not None:
            return provider.published  # adopted from a notice while we asked Redis
        current = provider.published
        if (
            newer is None
            and current is not None
            and (unconditional or self._clock.time() - current.wall_fetched_at < ttl)
        ):
            # the fleet refreshed within this lease and we hold that set already: look again later
            return self._clock.monotonic() + max(1.0, ttl / 2)
        if newer is None:  # the lease holder is fetching: its notice (or our timeout) ends the wait
            try:
                with fail_at(self._clock, self._clock.monotonic() + cfg.retry.deadline):
                    await notice.wait()
            except TimeoutError:
                pass
            if provider.published is not before and provider.published is not None:
                return provider.published
            newer = await self._newer_than_ours(provider)
        return newer

    async def _newer_than_ours(self, provider: Provider) -> Published | None:
        candidate = await self.load(provider)
        current = provider.published
        if candidate is None or (current is not None and candidate.wall_fetched_at <= current.wall_fetched_at):
            return None
        if self._clock.monotonic() >= candidate.expires_at:
            return None
        return candidate

    async def after_upstream_fetch(self, provider: Provider, published: Published) -> None:
        """Fleet mode: share the new set (save + notice) and keep the lease until it expires."""
        snapshot = self.snapshot_of(provider, published)
        if snapshot is None:
            return
        try:
            store: Any = self.store
            await self._call("publish", store.publish, snapshot)
            self.saves += 1
        except StoreError as exc:
            self._failed(f"cannot publish snapshot of {snapshot.tenant}/{snapshot.provider}: {exc}")

    async def release(self, provider: Provider) -> None:
        token, provider.lease_token = provider.lease_token, None
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
