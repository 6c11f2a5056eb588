"""The failure boundary: an exception of any type inside one of the Registry's tasks stays there.

The faults come in through the Registry's public extension points (a caller's httpx client, a
caller's store), because those run arbitrary code inside the Registry's tasks.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from tests.helpers import config_for, loopback_registry

from jwks_cache import FetchError, MemoryStore, ProviderState, Snapshot
from jwks_cache.testing import LocalIdentityProvider, VirtualClock


class _FaultyFor(httpx.AsyncBaseTransport):
    """A caller's transport that raises ``fault`` for one port and forwards the rest to loopback."""

    def __init__(self, port: int, fault: BaseException) -> None:
        self._port = port
        self._fault = fault
        self._real = httpx.AsyncHTTPTransport()
        self.faults = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.port == self._port:
            self.faults += 1
            raise self._fault
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


@pytest.mark.parametrize(
    "fault",
    [
        RecursionError("maximum recursion depth exceeded"),
        RuntimeError("a bug"),
        KeyError("x"),
        ExceptionGroup("g", [ValueError("v")]),
    ],
    ids=["recursion", "runtime", "keyerror", "group"],
)
async def test_an_unexpected_exception_in_one_flight_costs_that_provider_one_refresh(
    fault: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as healthy, LocalIdentityProvider() as hostile:
            transport = _FaultyFor(hostile.port, fault)
            async with (
                httpx.AsyncClient(transport=transport) as client,
                loopback_registry(clock, http_client=client) as reg,
            ):
                await reg.register(config_for(healthy, tenant="good"))
                await reg.register(config_for(hostile, tenant="bad"))
                with pytest.raises(FetchError, match=type(fault).__name__) as caught:
                    await reg.get_key("bad", "idp", hostile.kids[0])
                assert caught.value.__cause__ is not None
                status = reg.status("bad", "idp")
                assert status.last_error_type == "FetchError"
                assert status.state is ProviderState.FAILED
                assert f"unexpected {type(fault).__name__}" in (status.last_error or "")
                # the healthy tenant verifies throughout, and the hostile one is retried by the loop
                for _ in range(3):
                    claims = await reg.verify(healthy.mint({"sub": "a"}), tenant="good", provider="idp")
                    assert claims["sub"] == "a"
                    await clock.advance(120)
                assert transport.faults >= 2
                assert reg.status("bad", "idp").error_count >= 2
                assert reg.status("good", "idp").state is ProviderState.READY
    # one WARNING line per failed refresh, with the traceback of what went wrong
    lines = [r for r in caplog.records if getattr(r, "event", None) == "refresh_failed" and r.exc_info]
    assert lines
    assert lines[0].exc_info is not None and lines[0].exc_info[0] is type(fault)


class _BrokenStore(MemoryStore):
    """A caller's store whose every call fails with something that is not a StoreError."""

    def __init__(self, *, shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        self.calls = 0
        self.listens = 0

    def _fail(self) -> None:
        self.calls += 1
        raise RuntimeError("the store's own bug")

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        self._fail()
        return None

    async def save(self, snapshot: Snapshot) -> None:
        self._fail()

    async def delete(self, tenant: str, provider: str) -> None:
        self._fail()

    async def load_all(self) -> list[Snapshot]:
        self._fail()
        return []

    async def acquire_lease(self, tenant: str, provider: str, ttl: float, *, purpose: str = "refresh") -> str | None:
        self._fail()
        return None

    async def release_lease(self, tenant: str, provider: str, token: str, *, purpose: str = "refresh") -> None:
        self._fail()

    async def publish(self, snapshot: Snapshot) -> None:
        self._fail()

    async def listen(self, on_notice: Any, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.listens += 1
        if self.listens == 1:
            task_status.started()
        raise ExceptionGroup("listener", [ConnectionError("gone")])


@pytest.mark.parametrize("shared", [False, True], ids=["local", "fleet"])
async def test_a_store_that_raises_anything_never_stops_the_registry(shared: bool) -> None:
    clock = VirtualClock()
    store = _BrokenStore(shared=shared)
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp:
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(idp))
                for _ in range(3):
                    claims = await reg.verify(idp.mint({"sub": "a"}), tenant="acme", provider="idp")
                    assert claims["sub"] == "a"
                    await clock.advance(600)
                await reg.persist()
                assert await reg.unregister("acme", "idp")
            assert store.calls >= 4  # restore, saves or leases, the delete: each failed and was absorbed
            if shared:
                assert store.listens >= 3  # the listener is restarted after each failure, with a backoff
                # ... and a bounded one: over 1,800 virtual seconds, 7 quick restarts then one a minute
                assert store.listens <= 40


async def test_a_failing_loop_is_restarted_with_a_growing_backoff(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    store = _BrokenStore(shared=True)
    caplog.set_level(logging.WARNING, "jwks_cache")
    with anyio.fail_after(20):
        async with loopback_registry(clock, store=store):
            await clock.advance(0.5 + 1 + 2 + 4 + 0.1)
            assert store.listens == 5
            await clock.advance(7.8)
            assert store.listens == 5  # the next start is 8 s after the last
            await clock.advance(0.2)
            assert store.listens == 6
    failures = [r for r in caplog.records if getattr(r, "event", None) == "task_failed"]
    assert len(failures) == 6
    assert all(r.exc_info for r in failures)
    assert "fleet listener" in failures[0].getMessage()


async def test_registering_while_the_store_is_down_asks_it_nothing_per_provider() -> None:
    """A start-up against a failing store must not pay one store call (a timeout, for Redis) per
    registration: the store is degraded, and the prober catches up once it answers."""
    clock = VirtualClock()
    store = _BrokenStore()
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp, loopback_registry(clock, store=store) as reg:
            assert store.calls == 1  # the entry restore failed: degraded
            store_status = reg.store_status()
            assert store_status is not None and store_status.degraded
            await reg.register_many([config_for(idp, tenant=f"t{i}") for i in range(20)])
            assert store.calls == 1


async def test_a_poisoned_snapshot_is_refused_without_showing_the_store_as_degraded() -> None:
    clock = VirtualClock()
    store = MemoryStore()
    with anyio.fail_after(20):
        async with LocalIdentityProvider() as idp:
            await store.save(Snapshot(tenant="acme", provider="idp", jwks_url=idp.jwks_url, body=b'{"keys": 5}'))
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(idp))
                assert (await reg.get_key("acme", "idp", idp.kids[0])).kid == idp.kids[0]
                assert idp.request_count == 1  # refused, so fetched
                store_status = reg.store_status()
                assert store_status is not None and not store_status.degraded
