"""RedisStore against real redis-server processes (standalone and a 3-master cluster), on both backends."""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import coredis
import pytest

from jwks_cache import ConfigError, Registry, Snapshot, StoreError
from jwks_cache._stores import SharedStore, SnapshotStore
from jwks_cache._stores._redis import SNAPSHOT_GRACE
from jwks_cache.redis import RedisStore
from redis_servers import RedisClusterProcess, RedisServerProcess, coredis_outage

pytestmark = pytest.mark.redis

KEY = b"k" * 32
TIMEOUT = 0.5  # the default, kept where a test measures how fast an outage is reported
RELAXED = 5.0  # elsewhere: a loaded CI machine must not turn a slow round trip into a failure


class Target:
    """The session's standalone server or cluster: stores in this test's namespace, and a raw client."""

    def __init__(self, server: RedisServerProcess | RedisClusterProcess, namespace: str) -> None:
        self.server, self.namespace = server, namespace

    @contextlib.asynccontextmanager
    async def raw(self) -> AsyncIterator[coredis.Redis[bytes] | coredis.RedisCluster[bytes]]:
        if isinstance(self.server, RedisClusterProcess):
            async with self.server.client() as cluster_client:
                yield cluster_client
        else:
            async with coredis.Redis.from_url(self.server.url) as client:
                yield client

    @contextlib.asynccontextmanager
    async def store(self, **options: Any) -> AsyncIterator[RedisStore]:
        options = {"namespace": self.namespace, "timeout": RELAXED, **options}
        async with self.raw() as client, RedisStore(client, **options) as store:
            yield store


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest, redis_namespace: str) -> Target:
    fixture = "redis_server" if request.param == "standalone" else "redis_cluster"
    return Target(request.getfixturevalue(fixture), redis_namespace)


def make_snapshot(provider: str = "google", *, tenant: str = "acme", expires_in: float = 300.0) -> Snapshot:
    now = time.time()
    body = f'{{"keys":[],"p":"{provider}"}}'.encode()
    return Snapshot(
        tenant=tenant, provider=provider, jwks_url=f"https://idp.example/{provider}", body=body,
        etag='"v1"', fetched_at=now, expires_at=now + expires_in,
    )  # fmt: skip


async def test_snapshot_round_trip(target: Target) -> None:
    with anyio.fail_after(10):
        async with target.store() as store:
            assert isinstance(store, SnapshotStore)
            assert isinstance(store, SharedStore)
            assert await store.load("acme", "google") is None
            saved = make_snapshot()
            await store.save(saved)
            assert await store.load("acme", "google") == saved
            await store.delete("acme", "google")
            assert await store.load("acme", "google") is None
            await store.delete("acme", "google")  # absent is fine


async def test_load_all_scans_every_primary_in_batches(target: Target) -> None:
    with anyio.fail_after(30):
        async with target.store() as store:
            saved = {f"p{index}": make_snapshot(f"p{index}") for index in range(1200)}  # > 2 SCAN batches
            for snapshot in saved.values():
                await store.save(snapshot)
            loaded = await store.load_all()
    assert len(loaded) == len(saved)
    assert {snapshot.provider: snapshot for snapshot in loaded} == saved


async def test_snapshot_expires_a_grace_period_after_its_expiry(target: Target) -> None:
    with anyio.fail_after(10):
        async with target.store() as store, target.raw() as raw:
            await store.save(make_snapshot("fresh", expires_in=300))
            await store.save(make_snapshot("expired", expires_in=-10 * SNAPSHOT_GRACE))
            fresh_ttl = await raw.pttl(store.snapshot_key("acme", "fresh"))
            expired_ttl = await raw.pttl(store.snapshot_key("acme", "expired"))
    assert (300 + SNAPSHOT_GRACE - 30) * 1000 < fresh_ttl <= (300 + SNAPSHOT_GRACE) * 1000
    assert 50_000 < expired_ttl <= 60_000  # never shorter than a minute


def test_provider_keys_share_one_cluster_slot(redis_cluster: RedisClusterProcess, redis_namespace: str) -> None:
    store = RedisStore("redis://127.0.0.1:1/0", namespace=redis_namespace)
    snap_key, lease_key = store.snapshot_key("acme", "google"), store.lease_key("acme", "google")
    assert snap_key == f"{redis_namespace}:{{acme/google}}:snap"
    assert lease_key == f"{redis_namespace}:{{acme/google}}:lease"
    assert store.channel == f"{redis_namespace}:notices"
    node = redis_cluster.nodes[0]
    assert node.command("CLUSTER", "KEYSLOT", snap_key) == node.command("CLUSTER", "KEYSLOT", lease_key)


async def test_tampered_or_foreign_snapshots_are_ignored(target: Target) -> None:
    with anyio.fail_after(10):
        async with (
            target.store(hmac_key=KEY) as signed,
            target.store() as unsigned,
            target.store(hmac_key=b"x" * 32) as other,
            target.raw() as raw,
        ):
            good = make_snapshot("good")
            await signed.save(good)
            await unsigned.save(make_snapshot("unsigned"))
            await signed.save(make_snapshot("tampered"))
            await raw.append(signed.snapshot_key("acme", "tampered"), b"x")  # bytes after a MAC'd payload
            await raw.set(signed.snapshot_key("acme", "garbage"), b"not-a-snapshot")
            good_bytes = await raw.get(signed.snapshot_key("acme", "good"))
            assert good_bytes is not None
            await raw.set(signed.snapshot_key("acme", "copied"), good_bytes)  # valid MAC, another provider's key

            assert await signed.load("acme", "good") == good
            assert await unsigned.load("acme", "good") is None  # a MAC in front is not a snapshot
            assert await other.load("acme", "good") is None  # wrong key
            for provider in ("unsigned", "tampered", "garbage", "copied"):
                assert await signed.load("acme", provider) is None, provider
            assert [snapshot.provider for snapshot in await signed.load_all()] == ["good"]


async def test_lease_is_exclusive_released_only_by_its_owner_and_expires(target: Target) -> None:
    with anyio.fail_after(10):
        async with target.store(shared=True) as first, target.store(shared=True) as second, target.raw() as raw:
            token = await first.acquire_lease("acme", "google", ttl=30)
            assert token is not None
            assert await second.acquire_lease("acme", "google", ttl=30) is None
            assert 25_000 < await raw.pttl(first.lease_key("acme", "google")) <= 30_000

            await second.release_lease("acme", "google", "not-the-token")
            assert await second.acquire_lease("acme", "google", ttl=30) is None  # still held
            await first.release_lease("acme", "google", token)
            again = await second.acquire_lease("acme", "google", ttl=0.001)
            assert again is not None
            await first.release_lease("acme", "google", token)  # stale token: a no-op

            # the 1 ms lease lapses on its own; poll with real round trips, not sleeps
            while (late := await first.acquire_lease("acme", "google", ttl=30)) is None:
                pass
            assert late != again


async def test_lease_age_dates_the_current_holder_and_nobody_else(target: Target) -> None:
    with anyio.fail_after(10):
        async with target.store(shared=True) as first, target.store(shared=True) as second, target.raw() as raw:
            assert await second.lease_age("acme", "google", purpose="unknown-kid") is None  # nobody holds it
            token = await first.acquire_lease("acme", "google", ttl=30, purpose="unknown-kid")
            assert token is not None
            age = await second.lease_age("acme", "google", purpose="unknown-kid")
            assert age is not None and 0.0 <= age < 5.0
            assert await second.lease_age("acme", "google") is None  # the periodic lease is another key
            # a holder whose token does not carry the lease's lifetime (an older release) cannot be dated
            await raw.set(first.lease_key("acme", "google"), b"0123abcd", px=30_000)
            assert await second.lease_age("acme", "google") is None
            await first.release_lease("acme", "google", token, purpose="unknown-kid")
            assert await second.lease_age("acme", "google", purpose="unknown-kid") is None


async def test_publish_reaches_other_listeners_but_not_its_own(target: Target) -> None:
    received: list[tuple[str, str]] = []
    arrived = anyio.Event()

    async def on_notice(tenant: str, provider: str) -> None:
        received.append((tenant, provider))
        arrived.set()

    with anyio.fail_after(10):
        async with (
            target.store(shared=True) as listener,
            target.store(shared=True) as peer,
            anyio.create_task_group() as tg,
        ):
            await tg.start(listener.listen, on_notice)
            await listener.publish(make_snapshot("own"))  # FIFO: would arrive first if delivered
            await peer.publish(make_snapshot("peer"))
            await arrived.wait()
            tg.cancel_scope.cancel()
        assert received == [("acme", "peer")]
        async with target.store() as reader:
            assert await reader.load("acme", "peer") is not None


async def test_malformed_notices_are_skipped(redis_server: RedisServerProcess, redis_namespace: str) -> None:
    received: list[tuple[str, str]] = []
    arrived = anyio.Event()

    async def on_notice(tenant: str, provider: str) -> None:
        received.append((tenant, provider))
        arrived.set()

    deep = b'{"tenant":"acme","provider":"deep","fetched_at":1,"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    junk = [b"garbage", b'{"tenant":"../x","provider":"y","fetched_at":1}', b"[1,2]", b"\xff", deep]
    with anyio.fail_after(10):
        async with (
            RedisStore(redis_server.url, namespace=redis_namespace, timeout=RELAXED) as a,
            RedisStore(redis_server.url, namespace=redis_namespace, timeout=RELAXED) as b,
            coredis.Redis.from_url(redis_server.url) as raw,
            anyio.create_task_group() as tg,
        ):
            await tg.start(a.listen, on_notice)
            for message in junk:
                await raw.publish(a.channel, message)
            await b.publish(make_snapshot("valid"))
            await arrived.wait()
            tg.cancel_scope.cancel()
    assert received == [("acme", "valid")]


async def test_error_of_the_notice_handler_propagates(redis_server: RedisServerProcess, redis_namespace: str) -> None:
    class HandlerBug(Exception):
        pass

    async def on_notice(tenant: str, provider: str) -> None:
        raise HandlerBug(provider)

    with anyio.fail_after(10), pytest.RaisesGroup(HandlerBug):
        async with (
            RedisStore(redis_server.url, namespace=redis_namespace, timeout=RELAXED) as a,
            RedisStore(redis_server.url, namespace=redis_namespace, timeout=RELAXED) as b,
            anyio.create_task_group() as tg,
        ):
            await tg.start(a.listen, on_notice)
            await b.publish(make_snapshot())


@coredis_outage
async def test_outage_raises_store_error_within_twice_the_timeout(disposable_redis: RedisServerProcess) -> None:
    with anyio.fail_after(20):
        async with RedisStore(disposable_redis.url, timeout=TIMEOUT) as store:
            await store.save(make_snapshot())
            disposable_redis.stop()
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "load": lambda: store.load("acme", "google"),
                "save": lambda: store.save(make_snapshot()),
                "delete": lambda: store.delete("acme", "google"),
                "load_all": store.load_all,
                "acquire_lease": lambda: store.acquire_lease("acme", "google", 5),
                "release_lease": lambda: store.release_lease("acme", "google", "t"),
                "publish": lambda: store.publish(make_snapshot()),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(StoreError):
                    await call()
                assert time.monotonic() - started < TIMEOUT * 2, name
            disposable_redis.start()
            back = make_snapshot("back")
            await store.save(back)  # the same client recovers on its own
            assert await store.load("acme", "back") == back


@coredis_outage
async def test_hung_server_times_out_and_replies_stay_in_order(disposable_redis: RedisServerProcess) -> None:
    with anyio.fail_after(20):
        async with RedisStore(disposable_redis.url, timeout=TIMEOUT) as store:
            first, second = make_snapshot("first"), make_snapshot("second")
            await store.save(first)
            await store.save(second)
            disposable_redis.pause()
            try:
                started = time.monotonic()
                with pytest.raises(StoreError, match="timed out"):
                    await store.load("acme", "first")
                assert time.monotonic() - started < TIMEOUT * 2
            finally:
                disposable_redis.resume()
            # the late reply to the abandoned GET must not be taken for this one
            assert await store.load("acme", "second") == second
            assert await store.load("acme", "first") == first


class Heard:
    """An ``on_notice`` that records providers and wakes ``publish_until_heard`` on every notice."""

    def __init__(self) -> None:
        self.providers: list[str] = []
        self._changed = anyio.Event()

    async def __call__(self, tenant: str, provider: str) -> None:
        self.providers.append(provider)
        self._changed.set()
        self._changed = anyio.Event()

    async def publish_until_heard(self, peer: RedisStore, provider: str) -> None:
        # the listener resubscribes on its own schedule: repeat the notice until one lands
        while provider not in self.providers:
            with contextlib.suppress(StoreError):
                await peer.publish(make_snapshot(provider))
            with anyio.move_on_after(0.1):
                await self._changed.wait()


@coredis_outage
async def test_listen_survives_a_restart_and_delivers_again(disposable_redis: RedisServerProcess) -> None:
    heard = Heard()
    with anyio.fail_after(30):
        url = disposable_redis.url
        async with (
            RedisStore(url, shared=True, timeout=RELAXED) as listener,
            RedisStore(url, shared=True, timeout=RELAXED) as peer,
            anyio.create_task_group() as tg,
        ):
            await tg.start(listener.listen, heard)
            await heard.publish_until_heard(peer, "before")
            disposable_redis.restart()
            await heard.publish_until_heard(peer, "after")
            tg.cancel_scope.cancel()
    assert heard.providers[0] == "before"
    assert "after" in heard.providers


@coredis_outage
async def test_listen_starts_even_while_redis_is_down(disposable_redis: RedisServerProcess) -> None:
    heard = Heard()
    with anyio.fail_after(30):
        url = disposable_redis.url
        async with (
            RedisStore(url, shared=True, timeout=RELAXED) as listener,
            RedisStore(url, shared=True, timeout=RELAXED) as peer,
        ):
            disposable_redis.stop()
            async with anyio.create_task_group() as tg:
                await tg.start(listener.listen, heard)  # returns after the first failed attempt
                disposable_redis.start()
                await heard.publish_until_heard(peer, "google")
                tg.cancel_scope.cancel()


async def test_store_from_url_must_be_entered(redis_server: RedisServerProcess) -> None:
    store = RedisStore(redis_server.url, timeout=RELAXED)
    with anyio.fail_after(10):
        with pytest.raises(StoreError, match="entered"):
            await store.load("acme", "google")
        async with store:
            assert await store.load("acme", "nobody") is None
        with pytest.raises(StoreError, match="entered"):
            await store.save(make_snapshot())
        async with store:  # re-entering opens a fresh client
            await store.save(make_snapshot())
        await store.aclose()  # idempotent


@coredis_outage  # the refused call leaves a connection's streams behind, as failed connects do
async def test_passed_client_that_is_not_open_gives_store_errors(redis_server: RedisServerProcess) -> None:
    store = RedisStore(coredis.Redis.from_url(redis_server.url))
    with anyio.fail_after(10), pytest.raises(StoreError, match="is the client open"):
        await store.load("acme", "google")
    gc.collect()


async def test_passed_client_stays_open_after_the_store_closes(redis_server: RedisServerProcess) -> None:
    with anyio.fail_after(10):
        async with coredis.Redis.from_url(redis_server.url) as client:
            async with RedisStore(client, timeout=RELAXED) as store:
                await store.save(make_snapshot())
            assert await client.ping()


def test_invalid_configuration_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        RedisStore("redis://127.0.0.1:1/0", namespace="bad{tag}")
    with pytest.raises(ConfigError, match="timeout"):
        RedisStore("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisStore(coredis.Redis(decode_responses=True))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hmac_key"):
        RedisStore("redis://127.0.0.1:1/0", hmac_key=b"short")
    with pytest.raises(ConfigError):
        RedisStore(42)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "coredis", None)
    with pytest.raises(ConfigError, match=r"pip install jwks-cache\[redis\]"):
        RedisStore("redis://127.0.0.1:1/0")


async def test_keys_that_are_not_utf8_are_skipped(target: Target) -> None:
    with anyio.fail_after(10):
        async with target.store() as store, target.raw() as raw:
            good = make_snapshot("good")
            await store.save(good)
            prefix = target.namespace.encode()
            for junk in (b":{\xff/x}:snap", b":{acme/\xc3\x28}:snap", b":{\xed\xa0\x80}:snap"):
                await raw.set(prefix + junk, b"junk")  # matches the SCAN pattern, but no name we write
            await raw.set(store.snapshot_key("acme", "good").replace("good", "a/b"), b"junk")  # valid UTF-8
            assert await store.load_all() == [good]


async def test_registry_starts_with_a_key_that_is_not_utf8(
    redis_server: RedisServerProcess, redis_namespace: str
) -> None:
    with anyio.fail_after(10):
        async with coredis.Redis.from_url(redis_server.url) as raw:
            await raw.set(redis_namespace.encode() + b":{\xff/x}:snap", b"junk")
        store = RedisStore(redis_server.url, namespace=redis_namespace, timeout=RELAXED)
        async with Registry(store=store):
            pass


@pytest.mark.parametrize(
    "ttl", [math.inf, -math.inf, math.nan, 0, 0.0, -1, 10 * 365 * 86_400 + 1, 1e300, 2**64, True, "30"]
)
async def test_lease_ttl_must_be_a_finite_positive_bounded_number(
    redis_server: RedisServerProcess, redis_namespace: str, ttl: Any
) -> None:
    with anyio.fail_after(10):
        async with RedisStore(redis_server.url, namespace=redis_namespace, shared=True, timeout=RELAXED) as store:
            with pytest.raises(StoreError, match=r"lease ttl .*\(got .+\)"):
                await store.acquire_lease("acme", "google", ttl)
            token = await store.acquire_lease("acme", "google", 10 * 365 * 86_400)  # the bound itself is fine
            assert token is not None
            await store.release_lease("acme", "google", token)
