"""RedisStore: snapshots in Redis (standalone or cluster) through coredis, plus the fleet primitives.

coredis is imported when a store is built, so the core runs without the ``redis`` extra. coredis 6
is anyio-based and a client must be entered (``async with client:``) before use, in a task that
outlives its users: it anchors the connection tasks. So a store made from a URL must itself be
entered, and a passed client must already be open. Every call is bounded by ``timeout`` (the
connection handshake included) and every coredis or socket error, raised alone or inside an exception
group, becomes :class:`StoreError`: an outage costs at most ``timeout`` per call and never more than
a logged error to the owner. The listener's subscription is bounded the same way, so an owner that
waits for it to start waits at most ``timeout``.

A provider's keys share a hash tag (``{ns}:{tenant/provider}:snap`` and ``:lease``), hence one
cluster slot; notices go to one channel, ``{ns}:notices``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from .._clock import SystemClock
from .._config import MAX_SECONDS
from .._errors import ConfigError, StoreError
from .._http._retry import reconnect_delay
from .._models import Snapshot
from . import _codec
from ._protocol import ClosesOnExit, NoticeHandler

if TYPE_CHECKING:
    import coredis

__all__ = ["SNAPSHOT_GRACE", "RedisStore"]

_T = TypeVar("_T")
log = logging.getLogger("jwks_cache")

#: How long a snapshot outlives its expiry in Redis: longer than any sane stale window, so a
#: restarted fleet still finds its last good set during an IdP outage.
SNAPSHOT_GRACE: Final = 86_400.0  # seconds
_MIN_SNAPSHOT_TTL: Final = 60.0  # seconds
_MAX_SNAPSHOT_TTL: Final = 30 * 86_400.0  # seconds; bounds what an absurd expires_at can pin
_SCAN_BATCH: Final = 500  # keys per SCAN and per pipelined GET batch
_LISTEN_MIN_BACKOFF: Final = 0.05  # seconds; doubled per failed attempt, jittered down to half
_LISTEN_MAX_BACKOFF: Final = 5.0  # seconds; bounds how late a fleet hears that Redis is back
_MAX_IDLE_TIME: Final = 30  # seconds without a byte before a URL-made client drops a connection
_KEEPALIVE: Final = 10  # seconds of silence before the subscriber PINGs; below _MAX_IDLE_TIME
_NAMESPACE_RE: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")  # no hash-tag braces, no glob characters
_RELEASE_SCRIPT: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# a lease's value and its remaining lifetime, read together (a GET then a PTTL could straddle its expiry)
_LEASE_SCRIPT: Final = """
local value = redis.call('get', KEYS[1])
if not value then return false end
return {value, redis.call('pttl', KEYS[1])}
"""


def _closing_connection_class(base: type[Any]) -> type[Any]:
    """``base`` whose memory streams are closed however its run ends.

    coredis 6.9 makes a connection's streams in ``__init__`` and closes them only once the connection
    is up, so every failed connect leaves six streams that warn (``ResourceWarning``) when collected:
    hundreds a minute during an outage. Used for the clients the store makes itself.
    """

    async def run(self: Any, **kwargs: Any) -> None:
        try:
            await base.run(self, **kwargs)
        finally:
            for name in _CONNECTION_STREAMS:
                stream = getattr(self, name, None)
                if stream is not None:
                    stream.close()

    return type(f"Closing{base.__name__}", (base,), {"run": run, "__module__": __name__})


_CONNECTION_STREAMS: Final = (
    "_write_buffer_in",
    "_write_buffer_out",
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
)


def _import_coredis() -> Any:
    try:
        import coredis
    except ImportError as exc:
        raise ConfigError("RedisStore needs coredis: pip install jwks-cache[redis]") from exc
    return coredis


_PURPOSE_RE: Final = re.compile(r"[a-z][a-z-]{0,31}")


class RedisStore(ClosesOnExit):
    """A :class:`SnapshotStore` in Redis; with ``shared=True`` a fleet's :class:`SharedStore`.

    Enter it before use and leave it in the same task (the Registry does both). Every method raises
    :class:`StoreError` when Redis fails or does not answer within ``timeout``; bad data is logged
    and ignored instead. With ``shared=True`` a lease lets one instance refresh a provider per
    period, the others read its snapshot, and ``publish``/``listen`` tell every instance at once.
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
        """Configure the store; nothing connects before it is entered and used.

        Args:
            client_or_url: a ``redis://``, ``rediss://`` or ``unix://`` URL (the store makes, opens
                and closes its own client), or an open ``coredis.Redis``/``coredis.RedisCluster``
                the caller owns, made with ``decode_responses=False``: snapshots are binary.
            namespace: key prefix, so several deployments can share one Redis.
            shared: whether the owner should use the fleet primitives (lease, publish, listen).
            hmac_key: when set (at least 16 bytes), snapshots are signed and unsigned or altered
                entries are ignored: worth it when others can write to this Redis.
            timeout: seconds allowed per Redis call.

        Raises:
            ConfigError: coredis is missing, or an argument is invalid.
        """
        coredis = _import_coredis()
        if _NAMESPACE_RE.fullmatch(namespace) is None:
            raise ConfigError(f"namespace must be 1-100 chars of [A-Za-z0-9_.:/-] (got {namespace!r})")
        if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
            raise ConfigError(f"timeout must be a finite number of seconds > 0 (got {timeout!r})")
        self.shared = shared
        self._namespace = namespace
        self._hmac_key = _codec.check_hmac_key(hmac_key)
        self._timeout = float(timeout)
        self._clock = SystemClock()
        self._origin = secrets.token_hex(8)  # tells our own notices apart
        self._depth = 0
        if isinstance(client_or_url, str):
            self._owns_client = True
            try:
                self._client = coredis.Redis.from_url(
                    client_or_url,
                    decode_responses=False,
                    retry_policy=coredis.retry.NoRetryPolicy(),  # fail fast; the caller decides
                    connect_timeout=self._timeout,
                    max_idle_time=_MAX_IDLE_TIME,  # a half-open connection dies instead of stalling calls
                )
            except (ValueError, coredis.exceptions.RedisError) as exc:
                raise ConfigError(f"invalid redis URL {client_or_url!r}: {exc}") from exc
            pool = self._client.connection_pool
            pool.connection_class = _closing_connection_class(pool.connection_class)
        elif isinstance(client_or_url, coredis.Redis | coredis.RedisCluster):
            if client_or_url.decode_responses:
                raise ConfigError("RedisStore needs a client made with decode_responses=False")
            self._owns_client, self._client = False, client_or_url
        else:
            raise ConfigError(f"expected a redis URL or a coredis client (got {type(client_or_url).__name__})")
        self._cluster = isinstance(self._client, coredis.RedisCluster)

    def __repr__(self) -> str:
        return f"RedisStore({self._client!r}, namespace={self._namespace!r}, shared={self.shared})"

    async def __aenter__(self) -> Self:
        if self._owns_client:
            try:
                await self._client.__aenter__()  # a pool of its own: no connection is made here
            except Exception as exc:  # RuntimeError too: coredis refuses entries from unrelated tasks
                raise _store_error("cannot open redis client", exc) from exc
        self._depth += 1
        return self

    async def aclose(self) -> None:
        """Close the client made from a URL (once per entry); a passed client stays open."""
        if self._depth == 0:
            await anyio.lowlevel.checkpoint()
            return
        self._depth -= 1
        if self._owns_client:  # no shield scope here: the client's task group must be innermost
            try:
                await self._client.__aexit__(None, None, None)
            except Exception as exc:  # a connection that died while closing: nothing left to do about it
                log.warning("jwks-cache: store: closing the redis client: %s", _describe(exc))

    def snapshot_key(self, tenant: str, provider: str) -> str:
        """The Redis key holding the provider's snapshot."""
        _codec.check_names(tenant, provider)
        return f"{self._namespace}:{{{tenant}/{provider}}}:snap"

    def lease_key(self, tenant: str, provider: str, purpose: str = "refresh") -> str:
        """The Redis key holding one of the provider's leases (same slot as the snapshot)."""
        _codec.check_names(tenant, provider)
        if _PURPOSE_RE.fullmatch(purpose) is None:
            raise StoreError(f"invalid lease purpose {purpose!r}")
        suffix = "lease" if purpose == "refresh" else f"lease:{purpose}"
        return f"{self._namespace}:{{{tenant}/{provider}}}:{suffix}"

    @property
    def channel(self) -> str:
        """The pub/sub channel carrying change notices."""
        return f"{self._namespace}:notices"

    def _names_of(self, key: str) -> tuple[str, str] | None:
        """``(tenant, provider)`` of a snapshot key we write; ``None`` for any other key."""
        prefix, suffix = f"{self._namespace}:{{", "}:snap"
        if not (key.startswith(prefix) and key.endswith(suffix)):
            return None
        tenant, _, provider = key[len(prefix) : -len(suffix)].partition("/")
        try:
            _codec.check_names(tenant, provider)
        except StoreError:
            return None  # not a name we write (U+FFFD stands for bytes that were not UTF-8)
        return tenant, provider

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
        except RuntimeError as exc:  # coredis: "connection pool is not initialized" (client not open)
            raise StoreError(f"redis {what} failed (is the client open?): {exc}") from exc
        except Exception as exc:  # anything from coredis, alone or grouped: a garbled reply, a lost node
            raise _store_error(f"redis {what} failed", exc) from exc

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        """The provider's snapshot, or ``None`` if absent or unusable (logged)."""
        key = self.snapshot_key(tenant, provider)
        data = await self._call("GET", lambda: self._client.get(key))
        if data is None:
            return None
        return _codec.decode_or_none(bytes(data), self._hmac_key, source=key, expect=(tenant, provider))

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``; Redis drops it :data:`SNAPSHOT_GRACE` after its expiry (at least 60 s)."""
        key = self.snapshot_key(snapshot.tenant, snapshot.provider)
        data = _codec.encode(snapshot, self._hmac_key)
        remaining = snapshot.expires_at - self._clock.time() + SNAPSHOT_GRACE
        ttl_ms = int(min(max(remaining, _MIN_SNAPSHOT_TTL), _MAX_SNAPSHOT_TTL) * 1000)
        await self._call("SET", lambda: self._client.set(key, data, px=ttl_ms))

    async def delete(self, tenant: str, provider: str) -> None:
        """Remove the provider's snapshot, if any."""
        key = self.snapshot_key(tenant, provider)
        await self._call("DEL", lambda: self._client.delete([key]))

    async def load_all(self) -> list[Snapshot]:
        """Every usable snapshot: SCAN (on every primary of a cluster), then MGET (pipelined GETs on
        a cluster), in batches."""
        keys: list[str] = []
        if not self._cluster:
            keys = await self._scan(self._client)
        for node in self._client.primaries if self._cluster else ():
            try:
                async with node:  # a client of its own for this primary: errors come out in a group
                    keys += await self._scan(node)
            except Exception as exc:
                raise _store_error(f"redis SCAN on {node!r} failed", exc) from exc
        named = [(key, names) for key in keys if (names := self._names_of(key)) is not None]  # others aren't ours
        snapshots: list[Snapshot] = []
        rejections = _codec.Rejections()
        for start in range(0, len(named), _SCAN_BATCH):
            batch = named[start : start + _SCAN_BATCH]
            get_batch = functools.partial(self._get_many, [key for key, _ in batch])
            values = await self._call("GET (batch)", get_batch)
            for (key, names), data in zip(batch, values, strict=True):
                if data is None:
                    continue  # expired since the scan
                snapshot = _codec.decode_or_none(
                    bytes(data), self._hmac_key, source=key, expect=names, rejections=rejections
                )
                if snapshot is not None:
                    snapshots.append(snapshot)
        rejections.summarize()
        return snapshots

    async def ping(self) -> None:
        """Raise StoreError unless Redis answers; on a cluster, every primary must.

        The registry's health probe: one key's slot answering says nothing about the others'.
        """
        if not self._cluster:
            await self._call("PING", self._client.ping)
            return
        for node in self._client.primaries:
            try:
                async with node:
                    await self._call("PING", node.ping)
            except Exception as exc:
                raise _store_error(f"redis PING of {node!r} failed", exc) from exc

    async def _scan(self, node: Any) -> list[str]:
        keys: list[str] = []
        cursor, match = 0, f"{self._namespace}:{{*}}:snap"
        while True:
            scan = functools.partial(node.scan, cursor, match=match, count=_SCAN_BATCH)
            cursor, batch = await self._call("SCAN", scan)
            # a key that is not UTF-8 was not written by us: decode it lossily, _names_of refuses it
            keys += (key.decode(errors="replace") if isinstance(key, bytes) else str(key) for key in batch)
            if cursor == 0:
                return keys

    async def _get_many(self, keys: list[str]) -> tuple[Any, ...]:
        if not self._cluster:
            # one MGET, not a pipeline of GETs: coredis spends more per command than Redis does
            # per key, and a warm restart reads ten thousand of them
            return tuple(await self._client.mget(keys))
        # a cluster's keys live in as many slots as providers: MGET would be a cross-slot error
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
        return pipe.results or ()

    async def acquire_lease(self, tenant: str, provider: str, ttl: float, *, purpose: str = "refresh") -> str | None:
        """Take the provider's refresh lease for ``ttl`` seconds unless someone holds it (SET NX PX).

        Returns:
            The token proving ownership, or ``None`` when another instance holds the lease.

        Raises:
            StoreError: ``ttl`` is not a finite number of seconds in (0, ten years], or Redis failed.
        """
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_SECONDS:
            raise StoreError(f"lease ttl must be > 0 and <= {MAX_SECONDS:g} seconds (got {ttl!r})")
        key, ttl_ms = self.lease_key(tenant, provider, purpose), max(1, int(ttl * 1000))
        token = f"{secrets.token_hex(16)}/{ttl_ms}"  # the lifetime rides along, so lease_age can tell the age
        acquired = await self._call("SET NX", lambda: self._set_nx(key, token, ttl_ms))
        return token if acquired else None

    async def _set_nx(self, key: str, token: str, ttl_ms: int) -> bool:
        from coredis import PureToken

        return bool(await self._client.set(key, token, condition=PureToken.NX, px=ttl_ms))

    async def lease_age(self, tenant: str, provider: str, *, purpose: str = "refresh") -> float | None:
        """Seconds since the current holder took the lease, on Redis' clock; ``None`` when nobody holds
        it (or a holder of an older release, whose token does not carry the lease's lifetime).

        Lets a fleet member that did not get the lease tell whether the holder's fetch can have
        landed yet: a snapshot fetched before the lease was taken cannot be the holder's.
        """
        key = self.lease_key(tenant, provider, purpose)
        found = await self._call("EVAL (lease age)", lambda: self._client.eval(_LEASE_SCRIPT, keys=[key], args=[]))
        if not found:
            return None
        value, remaining_ms = found
        if not isinstance(value, bytes) or not isinstance(remaining_ms, int):
            return None  # not what our script returns: a foreign or hostile server
        _, _, ttl_text = value.decode(errors="replace").rpartition("/")
        if not ttl_text.isascii() or not ttl_text.isdigit() or int(remaining_ms) < 0:
            return None
        return max(0.0, (int(ttl_text) - int(remaining_ms)) / 1000)

    async def release_lease(self, tenant: str, provider: str, token: str, *, purpose: str = "refresh") -> None:
        """Delete the lease only while ``token`` owns it (compare-and-delete in Lua)."""
        key = self.lease_key(tenant, provider, purpose)
        await self._call("EVAL (release lease)", lambda: self._client.eval(_RELEASE_SCRIPT, keys=[key], args=[token]))

    async def publish(self, snapshot: Snapshot) -> None:
        """Save ``snapshot``, then announce it on the notice channel (on failure the save may have landed)."""
        await self.save(snapshot)
        message = _codec.encode_notice(snapshot, self._origin)
        await self._call("PUBLISH", lambda: self._client.publish(self.channel, message))

    async def listen(
        self,
        on_notice: NoticeHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_notice(tenant, provider)`` for each notice published by *another* store instance.

        Our own notices are skipped: our owner already holds that set. Runs until cancelled and rides
        out Redis outages (logged; jittered backoff up to 5 s). ``task_status.started()`` fires once
        subscribed or once the first attempt failed, which takes at most ``timeout``: connecting and
        subscribing are bounded like any call. Notices sent while disconnected are lost, so owners
        keep their own refresh schedule as the fallback.
        """
        self._require_open()
        started, failures, rng = False, 0, random.Random()

        def subscribed() -> None:
            nonlocal started, failures
            if failures:
                log.info("redis notices: subscribed to %s again", self.channel)
            failures = 0
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                handler_error = await self._listen_once(on_notice, subscribed)
            except Exception as exc:  # whatever coredis raised, alone or grouped: reconnect
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG  # once per outage, not per retry
                log.log(level, "redis notices: subscription to %s failed: %s", self.channel, _describe(exc))
            else:
                if handler_error is not None:
                    raise handler_error
                failures += 1  # the server ended the subscription: back off all the same
            if not started:
                started = True
                task_status.started()
            backoff = reconnect_delay(failures, initial=_LISTEN_MIN_BACKOFF, maximum=_LISTEN_MAX_BACKOFF, rng=rng)
            await self._clock.sleep_until(self._clock.monotonic() + backoff)

    async def _listen_once(self, on_notice: NoticeHandler, subscribed: Callable[[], None]) -> Exception | None:
        """One subscription, until the connection ends; returns (not raises) an error of ``on_notice``.

        Until the subscription is confirmed the attempt runs under a ``timeout`` deadline (a server
        that accepts and never answers would otherwise hold it in the handshake for good); the
        deadline is lifted once subscribed, as listening is meant to last.
        """
        pubsub = self._client.pubsub(
            channels=[self.channel],
            ignore_subscribe_messages=True,
            retry_policy=None,  # reconnecting is ours, with a bounded backoff
            subscription_timeout=self._timeout,
            max_idle_seconds=_KEEPALIVE,
        )
        with anyio.CancelScope(deadline=anyio.current_time() + self._timeout) as attempt:
            async with pubsub:
                attempt.deadline = math.inf
                subscribed()
                async for message in pubsub:
                    names = _codec.decode_notice(message.get("data"), skip_origin=self._origin)
                    if names is None:
                        continue
                    try:
                        await on_notice(*names)
                    except Exception as exc:  # the owner's bug: raised as itself, not inside coredis' group
                        return exc
        if attempt.cancelled_caught:
            raise StoreError(f"redis SUBSCRIBE timed out after {self._timeout}s")
        return None


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    """What went wrong, from the first exception inside any groups (coredis and anyio nest them)."""
    leaf = _leaves(exc)[0]
    if isinstance(leaf, StoreError):
        return str(leaf)
    if isinstance(leaf, TimeoutError):
        return "timed out"
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


def _store_error(what: str, exc: Exception) -> StoreError:
    """The StoreError standing for ``exc``: the caller raises it ``from exc``, so nothing is lost."""
    return StoreError(f"{what}: {_describe(exc)}")
