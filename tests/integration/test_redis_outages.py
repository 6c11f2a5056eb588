"""A Registry whose Redis is unreachable, hung, answering garbage or missing a cluster master.

Whatever the failure, entering the registry returns within a few store timeouts, tokens verify
against the identity provider directly, ``store_status()`` and ``/healthz`` say the store is
degraded, and the registry rejoins the fleet by itself once Redis is back. Real ``redis-server``
processes and real sockets, on both backends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import anyio.abc
import coredis
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import Registry
from jwks_cache.redis import RedisStore
from jwks_cache.testing import LocalIdentityProvider
from redis_servers import RedisClusterProcess, RedisServerProcess, coredis_outage, free_port

pytestmark = pytest.mark.redis

TIMEOUT = 0.5  # the store's default
ENTRY_BOUND = 10.0  # generous: entry must *return*, which the old code did not do for 30-90 s


@contextlib.asynccontextmanager
async def broken_server(behaviour: Literal["silent", "garbage"]) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that accepts and then never answers, or answers junk to anything."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if behaviour == "silent":
                await anyio.sleep_forever()
            with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError):
                while await stream.receive():
                    await stream.send(b"\x00not redis at all\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def check_degraded_but_serving(reg: Registry, idp: LocalIdentityProvider) -> None:
    """Tokens verify via the IdP itself and the store shows as degraded, in the API and on /healthz."""
    await reg.register(config_for(idp))
    claims = await reg.verify(idp.mint({"sub": "alice"}), tenant=TENANT, provider=PROVIDER)
    assert claims["sub"] == "alice"
    assert idp.request_count >= 1
    status = reg.store_status()
    assert status is not None and status.degraded
    assert status.errors >= 1 and status.last_error and status.degraded_since is not None
    assert await healthz(reg) == (200, "degraded")


async def healthz(reg: Registry) -> tuple[int, Any]:
    """``GET /healthz`` through the control plane: its status code and ``store`` field."""
    import httpx

    from jwks_cache.asgi import create_app

    transport = httpx.ASGITransport(app=create_app(reg, protect_reads=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
        response = await client.get("/healthz")
    return response.status_code, response.json().get("store")


@pytest.mark.parametrize("shared", [True, False])
async def test_unreachable_redis_from_url(shared: bool) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", shared=shared, timeout=TIMEOUT)
    async with LocalIdentityProvider() as idp:
        with anyio.fail_after(ENTRY_BOUND):
            async with loopback_registry(store=store) as reg:
                await check_degraded_but_serving(reg, idp)
    gc.collect()  # the store's own failed connects leave nothing that warns (filterwarnings = error)


@pytest.mark.parametrize("behaviour", ["silent", "garbage"])
# a client the caller made is coredis' own: a connect cancelled mid-way leaves streams that warn
@pytest.mark.parametrize("client", ["url", pytest.param("caller", marks=coredis_outage)])
async def test_hung_or_garbled_redis(behaviour: Literal["silent", "garbage"], client: str) -> None:
    async with LocalIdentityProvider() as idp, broken_server(behaviour) as port:
        with anyio.fail_after(ENTRY_BOUND):
            if client == "url":
                store = RedisStore(f"redis://127.0.0.1:{port}/0", shared=True, timeout=TIMEOUT)
                async with loopback_registry(store=store) as reg:
                    await check_degraded_but_serving(reg, idp)
            else:
                async with coredis.Redis("127.0.0.1", port) as raw:
                    store = RedisStore(raw, shared=True, timeout=TIMEOUT)
                    async with loopback_registry(store=store) as reg:
                        await check_degraded_but_serving(reg, idp)
    gc.collect()


@coredis_outage  # the cluster client is the test's: its failed connects warn inside coredis 6.9
@pytest.mark.parametrize("failure", ["killed", "paused"])
async def test_cluster_with_a_master_down(disposable_cluster: RedisClusterProcess, failure: str) -> None:
    lost = disposable_cluster.nodes[1]
    async with LocalIdentityProvider() as idp, disposable_cluster.client() as raw:
        if failure == "killed":
            lost.stop()
        else:
            lost.pause()
        try:
            with anyio.fail_after(ENTRY_BOUND):
                store = RedisStore(raw, shared=True, timeout=TIMEOUT)
                async with loopback_registry(store=store) as reg:
                    await check_degraded_but_serving(reg, idp)
        finally:
            if failure == "paused":
                lost.resume()
    gc.collect()


class Fleet:
    """Registries on one Redis: the one under test, and a peer that publishes to it."""

    def __init__(self, server: RedisServerProcess, idp: LocalIdentityProvider) -> None:
        self.server, self.idp = server, idp

    def store(self) -> RedisStore:
        return RedisStore(self.server.url, shared=True, timeout=TIMEOUT)

    async def wait_until_healthy(self, reg: Registry) -> None:
        while (status := reg.store_status()) is not None and status.degraded:
            await anyio.sleep(0.05)

    async def notify_until_adopted(self, reg: Registry, kid: str) -> None:
        """Publish the stored set (holding ``kid``) from another store until ``reg`` serves ``kid``."""
        async with self.store() as peer:
            snapshot = await peer.load(TENANT, PROVIDER)
            assert snapshot is not None
            while not _serves(reg, kid):
                await peer.publish(snapshot)  # the listener resubscribes on its own schedule
                await anyio.sleep(0.1)


def _serves(reg: Registry, kid: str) -> bool:
    try:
        reg.get_key_nowait(TENANT, PROVIDER, kid)
    except Exception:
        return False
    return True


@coredis_outage  # the peer's failed connects, if any, are not the registry's
async def test_a_registry_started_during_an_outage_rejoins_the_fleet(disposable_redis: RedisServerProcess) -> None:
    async with LocalIdentityProvider() as idp:
        fleet = Fleet(disposable_redis, idp)
        disposable_redis.stop()
        with anyio.fail_after(40):
            started = anyio.current_time()
            async with loopback_registry(store=fleet.store()) as reg:
                assert anyio.current_time() - started < ENTRY_BOUND
                await check_degraded_but_serving(reg, idp)
                disposable_redis.start()
                await fleet.wait_until_healthy(reg)  # the prober finds it: no refresh needed
                assert await healthz(reg) == (200, "ok")
                # the fleet works again: a peer's fetch of a rotated set reaches it by notice
                async with loopback_registry(store=fleet.store()) as peer:
                    new = idp.rotate()
                    await peer.register(config_for(idp))
                    await peer.get_key(TENANT, PROVIDER, new)
                    before = idp.request_count
                    await fleet.notify_until_adopted(reg, new)
                    assert idp.request_count == before  # adopted from the fleet, not fetched
