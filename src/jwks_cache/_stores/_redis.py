"""RedisStore: snapshots in Redis (standalone or cluster) through coredis, plus the fleet primitives.

coredis is imported when a store is built, so the core runs without the ``redis`` extra. coredis 6
is anyio-based and its clients must be entered (``async with client:``) before use: the entering
task anchors the client's connection tasks. Hence a store made from a URL must itself be entered,
and a passed client must already be open. Every call is bounded by ``timeout`` and every coredis or
socket error becomes :class:`StoreError`, so an outage costs at most ``timeout`` per call.

Keys share a hash tag per provider (``{ns}:{tenant/provider}:snap`` and ``:lease``) so a provider's
keys live in one cluster slot; notices go to one channel, ``{ns}:notices``.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from .._clock import SystemClock
from .._errors import ConfigError, StoreError
from .._models import Snapshot
from . import _codec
from ._protocol import NoticeHandler

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisStore"]

_T = TypeVar("_T")

log = logging.getLogger("jwks_cache")

#: How long a snapshot outlives its expiry in Redis: long enough to cover any stale window, so a
#: restarted fleet still finds its last good set during an IdP outage.
SNAPSHOT_GRACE: Final = 86_400.0  # seconds
_MIN_SNAPSHOT_TTL: Final = 60.0  # seconds
_MAX_SNAPSHOT_TTL: Final = 30 * 86_400.0  # seconds; bounds what an absurd expires_at can pin
_SCAN_BATCH: Final = 500
_LISTEN_MIN_BACKOFF: Final = 0.05  # seconds; doubled per failed attempt, jittered down to half
_LISTEN_MAX_BACKOFF: Final = 5.0  # seconds; bounds how late a fleet hears of Redis coming back
_NAMESPACE_RE: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")  # no braces or glob characters
_RELEASE_SCRIPT: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def _import_coredis() -> Any:
    try:
        import coredis
    except ImportError as exc:
        raise ConfigError("RedisStore needs coredis: pip install jwks-cache[redis]") from exc
    return coredis


class _Notice(msgspec.Struct, frozen=True):
    """What ``publish`` broadcasts: small, JSON so that decoding clients can read it too."""

    tenant: str
    provider: str
    fetched_at: float
    origin: str = ""


class RedisStore:
    """A :class:`SnapshotStore` in Redis; with ``shared=True`` the fleet's :class:`SharedStore`.

    Enter it before use and leave it in the same task (the Registry does both). With ``shared=True``
    a lease lets one instance refresh a provider per period, the others read its snapshot, and
    ``publish``/``listen`` carry a notice to every instance within a second.
    """

    shared: bool

    def __init__(
        self,
        client_or_url: str | coredis.Redis[bytes] | coredis.RedisCluster[bytes],
        *,
        namespace: str = "jwks-cache",
        shared: bool = False,
        hmac_key: bytes | None = None,
        timeout: float = 0.5,
    ) -> None:
        """Configure the store; no connection is made here.

        Args:
            client_or_url: a ``redis://``/``rediss://``/``unix://`` URL (the store makes, opens and
                closes its own client), or an open ``coredis.Redis``/``coredis.RedisCluster`` the
                caller owns. Either way responses must not be decoded (snapshots are binary).
            namespace: key prefix, so several deployments can share one Redis.
            shared: whether the owner should use the fleet primitives (lease, publish, listen).
            hmac_key: when set (at least 16 bytes), snapshots are signed and unsigned or altered
                entries are ignored: worth it when others can write to this Redis.
            timeout: seconds allowed for each Redis call; an outage costs at most this much.

        Raises:
            ConfigError: coredis is missing, or an argument is invalid.
        """
        coredis = _import_coredis()
        if _NAMESPACE_RE.fullmatch(namespace) is None:
            raise ConfigError(f"namespace must be 1-100 chars of [A-Za-z0-9_.:/-] (got {namespace!r})")
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0 (got {timeout!r})")
        self.shared = shared
        self._namespace = namespace
        self._hmac_key = _codec.check_hmac_key(hmac_key)
        self._timeout = float(timeout)
        self._clock = SystemClock()
        self._origin = secrets.token_hex(8)
        self._errors: tuple[type[BaseException], ...] = (
            coredis.exceptions.RedisError,
            OSError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        )
        self._depth = 0
        if isinstance(client_or_url, str):
            self._client = self._client_from_url(coredis, client_or_url)
            self._owns_client = True
        elif isinstance(client_or_url, coredis.Redis | coredis.RedisCluster):
            if client_or_url.decode_responses:
                raise ConfigError("RedisStore needs a client made with decode_responses=False")
            self._client = client_or_url
            self._owns_client = False
        else:
            raise ConfigError(f"expected a redis URL or a coredis client (got {type(client_or_url).__name__})")
        self._cluster = isinstance(self._client, coredis.RedisCluster)

    def _client_from_url(self, coredis: Any, url: str) -> Any:
        from coredis.retry import NoRetryPolicy

        try:
            return coredis.Redis.from_url(
                url,
                decode_responses=False,
                retry_policy=NoRetryPolicy(),  # retrying is the caller's call; we must fail fast
                connect_timeout=self._timeout,
                max_idle_time=60,  # a silently dead server is noticed even on idle connections
            )
        except (ValueError, coredis.exceptions.RedisError) as exc:
            raise ConfigError(f"invalid redis URL {url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"RedisStore({self._client!r}, namespace={self._namespace!r}, shared={self.shared})"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Open the store's own client (a URL); a passed client is the caller's to open."""
        if self._owns_client:
            try:
                await self._client.__aenter__()
            except (*self._errors, RuntimeError) as exc:  # type: ignore[misc]
                raise StoreError(f"cannot open redis client: {exc}") from exc
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client made from a URL (once per entry); a passed client stays open."""
        if self._depth == 0:
            await anyio.lowlevel.checkpoint()
            return
        self._depth -= 1
        if self._owns_client:
            # no shield scope around it: the client's task group must be the innermost scope here
            await self._client.__aexit__(None, None, None)

    # -- keys -------------------------------------------------------------------------------

    def _tag(self, tenant: str, provider: str) -> str:
        _codec.check_names(tenant, provider)
        return f"{self._namespace}:{{{tenant}/{provider}}}"

    def snapshot_key(self, tenant: str, provider: str) -> str:
        """The Redis key holding the provider's snapshot."""
        return f"{self._tag(tenant, provider)}:snap"

    def lease_key(self, tenant: str, provider: str) -> str:
        """The Redis key holding the provider's refresh lease."""
        return f"{self._tag(tenant, provider)}:lease"

    @property
    def channel(self) -> str:
        """The pub/sub channel carrying change notices."""
        return f"{self._namespace}:notices"

    def _parse_key(self, key: str) -> tuple[str, str] | None:
        prefix, suffix = f"{self._namespace}:{{", "}:snap"
        if not (key.startswith(prefix) and key.endswith(suffix)):
            return None
        tenant, _, provider = key[len(prefix) : -len(suffix)].partition("/")
        return tenant, provider

    # -- calls ------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._owns_client and self._depth == 0:
            raise StoreError("RedisStore must be entered before use (async with store: ...)")

    async def _call(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """One bounded Redis round trip; every failure becomes a StoreError naming the operation."""
        self._require_open()
        try:
            with anyio.fail_after(self._timeout):
                return await operation()
        except TimeoutError as exc:
            raise StoreError(f"redis {what} timed out after {self._timeout}s") from exc
        except self._errors as exc:
            raise StoreError(f"redis {what} failed: {exc}") from exc
        except RuntimeError as exc:  # coredis: "connection pool is not initialized" (client not open)
            raise StoreError(f"redis {what} failed (is the client open?): {exc}") from exc

    def _snapshot_ttl_ms(self, snapshot: Snapshot) -> int:
        remaining = snapshot.expires_at - self._clock.time() + SNAPSHOT_GRACE
        return int(min(max(remaining, _MIN_SNAPSHOT_TTL), _MAX_SNAPSHOT_TTL) * 1000)

    # -- SnapshotStore ----------------------------------------------------------------------

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        """The provider's snapshot, or ``None`` if absent or unusable (logged).

        Raises:
            StoreError: Redis failed or did not answer within ``timeout``.
        """
        key = self.snapshot_key(tenant, provider)
        data = await self._call("GET", lambda: self._client.get(key))
        if data is None:
            return None
        return _codec.decode_or_none(bytes(data), self._hmac_key, source=key, expect=(tenant, provider))

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``; it expires a grace period after its own expiry.

        Raises:
            StoreError: Redis failed or did not answer within ``timeout``.
        """
        key = self.snapshot_key(snapshot.tenant, snapshot.provider)
        data = _codec.encode(snapshot, self._hmac_key)
        ttl_ms = self._snapshot_ttl_ms(snapshot)
        await self._call("SET", lambda: self._client.set(key, data, px=ttl_ms))

    async def delete(self, tenant: str, provider: str) -> None:
        """Remove the provider's snapshot, if any.

        Raises:
            StoreError: Redis failed or did not answer within ``timeout``.
        """
        key = self.snapshot_key(tenant, provider)
        await self._call("DEL", lambda: self._client.delete([key]))

    async def load_all(self) -> list[Snapshot]:
        """Every usable snapshot, scanned in batches (on every primary of a cluster).

        Raises:
            StoreError: Redis failed or a batch did not answer within ``timeout``.
        """
        keys: list[str] = []
        if self._cluster:
            for node in self._client.primaries:
                try:
                    async with node:
                        keys += await self._scan(node)
                except self._errors as exc:
                    raise StoreError(f"redis SCAN on {node!r} failed: {exc}") from exc
        else:
            keys = await self._scan(self._client)
        snapshots: list[Snapshot] = []
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]
            values = await self._call("GET (batch)", functools.partial(self._get_many, batch))
            for key, data in zip(batch, values, strict=True):
                names = self._parse_key(key)
                if data is None or names is None:
                    continue
                snapshot = _codec.decode_or_none(bytes(data), self._hmac_key, source=key, expect=names)
                if snapshot is not None:
                    snapshots.append(snapshot)
        return snapshots

    async def _scan(self, node: Any) -> list[str]:
        keys: list[str] = []
        cursor = 0
        match = f"{self._namespace}:{{*}}:snap"
        while True:
            scan = functools.partial(node.scan, cursor, match=match, count=_SCAN_BATCH)
            cursor, batch = await self._call("SCAN", scan)
            keys += (key.decode() if isinstance(key, bytes) else str(key) for key in batch)
            if cursor == 0:
                return keys

    async def _get_many(self, keys: list[str]) -> tuple[Any, ...]:
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
        return pipe.results or ()

    # -- SharedStore ------------------------------------------------------------------------

    async def acquire_lease(self, tenant: str, provider: str, ttl: float) -> str | None:
        """Take the provider's refresh lease for ``ttl`` seconds if nobody holds it (SET NX PX).

        Returns:
            The token proving ownership, or ``None`` when another instance holds the lease.

        Raises:
            StoreError: Redis failed or did not answer within ``timeout``.
        """
        if not ttl > 0:
            raise StoreError(f"lease ttl must be > 0 (got {ttl!r})")
        key = self.lease_key(tenant, provider)
        token = secrets.token_hex(16)
        ttl_ms = max(1, int(ttl * 1000))
        acquired = await self._call("SET NX", lambda: self._set_nx(key, token, ttl_ms))
        return token if acquired else None

    async def _set_nx(self, key: str, token: str, ttl_ms: int) -> bool:
        from coredis import PureToken

        return bool(await self._client.set(key, token, condition=PureToken.NX, px=ttl_ms))

    async def release_lease(self, tenant: str, provider: str, token: str) -> None:
        """Delete the lease only if ``token`` still owns it (compare-and-delete in Lua).

        Raises:
            StoreError: Redis failed or did not answer within ``timeout``.
        """
        key = self.lease_key(tenant, provider)
        await self._call("EVAL (release lease)", lambda: self._client.eval(_RELEASE_SCRIPT, keys=[key], args=[token]))

    async def publish(self, snapshot: Snapshot) -> None:
        """Save ``snapshot``, then announce it on the notice channel.

        Raises:
            StoreError: Redis failed or did not answer within ``timeout`` (the save may have landed).
        """
        await self.save(snapshot)
        notice = _Notice(snapshot.tenant, snapshot.provider, snapshot.fetched_at, self._origin)
        message = msgspec.json.encode(notice)
        await self._call("PUBLISH", lambda: self._client.publish(self.channel, message))

    async def listen(
        self,
        on_notice: NoticeHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_notice(tenant, provider)`` for each notice published by *other* store instances.

        Notices from this instance are skipped: its owner already holds that set. Runs until
        cancelled; a Redis outage is logged and retried with bounded, jittered backoff. Notices sent
        while disconnected are lost, so owners keep their own refresh schedule as the fallback.
        """
        self._require_open()
        started, failures, rng = False, 0, random.Random()

        def subscribed() -> None:
            nonlocal started, failures
            if failures:
                log.info("redis notices: subscribed again to %s", self.channel)
            failures = 0
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                handler_error = await self._listen_once(on_notice, subscribed)
            except Exception as exc:
                if not self._is_outage(exc):
                    raise
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "redis notices: subscription to %s failed: %r", self.channel, exc)
            else:
                if handler_error is not None:
                    raise handler_error
                failures += 1  # the server ended the subscription: back off all the same
            if not started:
                started = True
                task_status.started()
            backoff = min(_LISTEN_MAX_BACKOFF, _LISTEN_MIN_BACKOFF * 2 ** min(failures, 16))
            await self._clock.sleep_until(self._clock.monotonic() + backoff * rng.uniform(0.5, 1.0))

    async def _listen_once(self, on_notice: NoticeHandler, subscribed: Callable[[], None]) -> Exception | None:
        """One subscription, until the connection ends; returns (not raises) an error of ``on_notice``."""
        pubsub = self._client.pubsub(
            channels=[self.channel],
            ignore_subscribe_messages=True,
            retry_policy=None,  # reconnecting is ours, with a bounded backoff
            subscription_timeout=self._timeout,
        )
        async with pubsub:
            subscribed()
            async for message in pubsub:
                names = self._accept(message.get("data"))
                if names is None:
                    continue
                try:
                    await on_notice(*names)
                except Exception as exc:  # a bug of the owner: leave the subscription, then raise it
                    return exc
        return None

    def _is_outage(self, exc: BaseException) -> bool:
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(self._errors)
            return rest is None
        return isinstance(exc, self._errors)

    def _accept(self, data: object) -> tuple[str, str] | None:
        """A notice's (tenant, provider), or ``None`` for our own and for malformed ones."""
        try:
            notice = msgspec.json.decode(data if isinstance(data, bytes | str) else b"", type=_Notice)
            _codec.check_names(notice.tenant, notice.provider)
        except (msgspec.DecodeError, StoreError):
            return None
        if notice.origin == self._origin:
            return None
        return notice.tenant, notice.provider
