"""Registry + snapshot stores: warm restarts without the identity provider, and what is never restored."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, failed_lookups, loopback_registry

from jwks_cache import FileStore, KeyNotFoundError, MemoryStore, ProviderConfig, ProviderState, Snapshot
from jwks_cache.testing import LocalIdentityProvider, VirtualClock


async def test_file_store_warm_start_needs_no_upstream_request(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            async with loopback_registry(store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp))
                kid = idp.kids[0]
                await reg.get_key(TENANT, PROVIDER, kid)
            assert idp.request_count == 1
            async with loopback_registry(store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp))
                assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid  # before any fetch
                assert reg.status(TENANT, PROVIDER).state is ProviderState.READY
                assert idp.request_count == 1


async def test_restore_on_register_uses_the_store_before_the_first_lookup(tmp_path: Path) -> None:
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            async with loopback_registry(store=store) as reg:
                await reg.register(config_for(idp))
                await reg.refresh(TENANT, PROVIDER)
            async with loopback_registry(store=store) as reg:
                await reg.register(config_for(idp))  # registered after entry: restored on register
                assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
            assert idp.request_count == 1


async def test_a_snapshot_for_another_url_is_not_restored(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, LocalIdentityProvider() as other:
            async with loopback_registry(store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp))
                await reg.refresh(TENANT, PROVIDER)
            async with loopback_registry(store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(other))
                await reg.refresh(TENANT, PROVIDER)
                assert other.request_count == 1


async def test_expired_snapshot_is_revalidated_before_it_is_served(tmp_path: Path) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            idp.cache_control = "max-age=60"
            async with loopback_registry(clock, store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp, stale_while_error=60.0))
                await reg.refresh(TENANT, PROVIDER)
            later = VirtualClock(start=clock.monotonic(), wall_start=clock.time() + 3600)
            idp.fail(503)
            async with loopback_registry(later, store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp, stale_while_error=60.0))
                errors = await failed_lookups(reg, later, idp.kids[0], steps=40)
                assert len(errors) == 1 and "503" in str(errors[0])  # the expired set was not served
            idp.recover()
            async with loopback_registry(later, store=FileStore(tmp_path)) as reg:
                await reg.register(config_for(idp, stale_while_error=60.0))
                assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
                assert "if-none-match" in idp.requests[-1].headers  # revalidated, then served


async def test_restore_never_replaces_a_newer_in_memory_set() -> None:
    store = MemoryStore()
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock, store=store) as reg:
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await reg.persist()  # saves are asynchronous; make this one happen now
            old_snapshot = await store.load(TENANT, PROVIDER)
            assert old_snapshot is not None
            new_kid = idp.rotate()
            await clock.advance(1.0)
            await reg.get_key(TENANT, PROVIDER, new_kid)  # unknown kid: a newer set arrives
            await store.save(old_snapshot)  # the store now lags behind memory
            await reg.restore()
            assert reg.get_key_nowait(TENANT, PROVIDER, new_kid).kid == new_kid


async def test_no_store_responses_are_not_persisted() -> None:
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            idp.cache_control = "no-store"
            async with loopback_registry(store=store) as reg:
                await reg.register(config_for(idp))
                await reg.refresh(TENANT, PROVIDER)
                await reg.persist()
            assert await store.load(TENANT, PROVIDER) is None


async def test_a_corrupt_store_file_never_breaks_lookups(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            store = FileStore(tmp_path)
            store.path_for(TENANT, PROVIDER).write_bytes(b"\x00garbage")
            async with loopback_registry(store=store) as reg:
                await reg.register(config_for(idp))
                assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
            assert idp.request_count == 1


async def test_unregister_deletes_the_stored_snapshot() -> None:
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(store=store) as reg:
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await reg.persist()
            assert await store.load(TENANT, PROVIDER) is not None
            assert await reg.unregister(TENANT, PROVIDER)
            assert await store.load(TENANT, PROVIDER) is None


def _modulus(idp: LocalIdentityProvider, kid: str) -> str:
    return next(k["n"] for k in idp.jwks["keys"] if k["kid"] == kid)


async def test_an_issuer_registration_never_restores_another_issuers_snapshot() -> None:
    """An issuer registration learns its JWKS URL by discovery: the snapshot must name the issuer."""
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as a, LocalIdentityProvider() as b:
            kid = a.kids[0]
            assert kid in b.kids and _modulus(a, kid) != _modulus(b, kid)  # same kid, different keys
            issuer_a = config_for(a, jwks_url=None, issuer=a.issuer)
            issuer_b = config_for(b, jwks_url=None, issuer=b.issuer)
            async with loopback_registry(store=store) as reg:
                await reg.register(issuer_a)
                await reg.get_key(TENANT, PROVIDER, kid)
                await reg.persist()
                await reg.register(issuer_b)  # same tenant and provider, another issuer
                with pytest.raises(KeyNotFoundError):
                    reg.get_key_nowait(TENANT, PROVIDER, kid)  # A's keys are neither kept nor restored
                served = await reg.get_key(TENANT, PROVIDER, kid)
                assert served.as_dict()["n"] == _modulus(b, kid)
            async with loopback_registry(store=store) as reg:  # a restart: the store holds B's set now
                await reg.register(issuer_b)
                assert reg.get_key_nowait(TENANT, PROVIDER, kid).as_dict()["n"] == _modulus(b, kid)
                await reg.register(issuer_a)
                with pytest.raises(KeyNotFoundError):
                    reg.get_key_nowait(TENANT, PROVIDER, kid)
            assert (a.request_count, b.request_count) == (1, 1)


def _snapshot(idp: LocalIdentityProvider, tenant: str, **fields: Any) -> Snapshot:
    body = json.dumps(idp.jwks).encode()
    return Snapshot(tenant=tenant, provider=PROVIDER, jwks_url=idp.jwks_url, body=body, **fields)


async def test_a_restored_lifetime_is_clamped_as_a_fetched_one_would_be() -> None:
    """A store is trusted with bytes, not policy: max_ttl holds, and a future fetch time counts as now."""
    clock = VirtualClock()
    store = MemoryStore()
    now = clock.time()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            await store.save(_snapshot(idp, "forever", fetched_at=now, expires_at=now + 3e8))
            await store.save(_snapshot(idp, "ahead", fetched_at=now + 3600, expires_at=now + 3900))
            async with loopback_registry(clock, store=store) as reg:
                await reg.register_many(config_for(idp, tenant=t, max_ttl=600.0) for t in ("forever", "ahead"))
                for tenant, lifetime in (("forever", 600), ("ahead", 300)):
                    assert reg.get_key_nowait(tenant, PROVIDER, idp.kids[0]).kid == idp.kids[0]  # restored
                    expires_at = reg.status(tenant, PROVIDER).expires_at
                    assert expires_at is not None and expires_at.timestamp() == pytest.approx(now + lifetime, abs=1)
                assert idp.request_count == 0
                await clock.advance(300)  # each refreshes within its clamped lifetime
                assert (reg.status("ahead", PROVIDER).refreshes, reg.status("forever", PROVIDER).refreshes) == (1, 0)
                await clock.advance(300)
                assert reg.status("forever", PROVIDER).refreshes == 1


async def test_stored_validators_a_response_could_not_have_sent_are_dropped() -> None:
    clock = VirtualClock()
    store = MemoryStore()
    now = clock.time()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            snapshot = _snapshot(
                idp,
                TENANT,
                fetched_at=now,
                expires_at=now + 60,
                etag='"v1"\r\nX-Injected: 1',
                last_modified="Mon, 01 Jan 2024 00:00:00 GMT\u00e9",
            )
            await store.save(snapshot)
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(idp))
                await clock.advance(120)  # past the refresh of the restored set
                status = reg.status(TENANT, PROVIDER)
                assert (status.refreshes, status.refresh_errors) == (1, 0)
                headers = idp.requests[-1].headers
                assert "if-none-match" not in headers and "if-modified-since" not in headers


class _GatedStore(MemoryStore):
    """A store whose next save waits for the test to open a gate: a slow disk or Redis, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None
        self.held = anyio.Event()

    async def save(self, snapshot: Snapshot) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.held.set()
            await gate.wait()
        await super().save(snapshot)


async def test_persist_never_lets_a_slow_save_of_an_older_set_land_last() -> None:
    store = _GatedStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(store=store) as reg:
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await reg.persist()
            gate = store.gate = anyio.Event()
            idp.rotate()
            await reg.refresh(TENANT, PROVIDER)  # set 2: the persister's save of it hangs at the gate
            await store.held.wait()
            idp.rotate()
            await reg.refresh(TENANT, PROVIDER)  # set 3, the newest
            newest = reg.status(TENANT, PROVIDER).key_ids
            async with anyio.create_task_group() as tg:
                tg.start_soon(reg.persist)  # must queue behind the save in progress, not overtake it
                await anyio.wait_all_tasks_blocked()
                gate.set()
            stored = await store.load(TENANT, PROVIDER)
            assert stored is not None
            assert tuple(k["kid"] for k in json.loads(stored.body)["keys"]) == newest


async def _fetched(store: MemoryStore, idp: LocalIdentityProvider, config: ProviderConfig, **registry: Any) -> None:
    """A registry's life: register, fetch the first key, leave (which saves its snapshot)."""
    async with loopback_registry(store=store, **registry) as reg:
        await reg.register(config)
        await reg.get_key(TENANT, PROVIDER, idp.kids[0])


async def _restored(store: MemoryStore, idp: LocalIdentityProvider, config: ProviderConfig) -> bool:
    """Whether a restarted registry serves ``config``'s first key from the store, before any fetch."""
    async with loopback_registry(store=store) as reg:
        await reg.register(config)
        try:
            reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0])
        except KeyNotFoundError:
            return False
        return True


async def test_keys_fetched_under_other_rules_are_never_restored() -> None:
    """A pin removed, an allowlist changed: none can be judged again from a stored document."""
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            kid = idp.kids[0]
            async with loopback_registry(store=store) as reg:
                await reg.register(config_for(idp))
                await reg.get_key(TENANT, PROVIDER, kid)
                await reg.persist()
                await reg.register(config_for(idp, allowed_domains=("127.0.0.1",)))  # in process
                with pytest.raises(KeyNotFoundError):
                    reg.get_key_nowait(TENANT, PROVIDER, kid)
            assert not await _restored(store, idp, config_for(idp, max_redirects=0))  # a restart, other rules
            await _fetched(store, idp, config_for(idp, max_redirects=0))
            assert await _restored(store, idp, config_for(idp, max_redirects=0))  # the same rules
            assert idp.request_count == 2


async def test_keys_fetched_through_another_transport_are_not_restored() -> None:
    """A caller's client is a rule too: the registry's own, guarded transport fetches again."""
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            await _fetched(store, idp, config_for(idp), http_client=client)
            assert not await _restored(store, idp, config_for(idp))
            assert idp.request_count == 1


async def test_a_reordered_allowlist_is_the_same_rule() -> None:
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            await _fetched(store, idp, config_for(idp, allowed_domains=("example.com", "127.0.0.1")))
            assert await _restored(store, idp, config_for(idp, allowed_domains=("127.0.0.1", "example.com")))
            assert idp.request_count == 1


async def test_a_stored_body_larger_than_max_response_bytes_is_not_restored(tmp_path: Path) -> None:
    """What enters from a store meets a fetch's limits: a FileStore without hmac_key holds any bytes."""
    clock = VirtualClock()
    store = FileStore(tmp_path)
    now = clock.time()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            padded = dict(idp.jwks, padding=["x" * 1000] * 1900)  # a valid JWKS with an unknown member
            big = Snapshot(
                tenant=TENANT,
                provider=PROVIDER,
                jwks_url=idp.jwks_url,
                body=json.dumps(padded).encode(),
                fetched_at=now,
                expires_at=now + 3600,
            )
            await store.save(big)
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(idp))
                with pytest.raises(KeyNotFoundError):
                    reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0])  # not restored
                assert (await reg.get_key(TENANT, PROVIDER, idp.kids[0])).kid == idp.kids[0]
                assert idp.request_count == 1  # fetched instead
            await store.save(big)
            async with loopback_registry(clock, store=store) as reg:  # a limit raised to fit admits it
                await reg.register(config_for(idp, max_response_bytes=4_000_000))
                assert reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0]).kid == idp.kids[0]
                assert idp.request_count == 1


async def test_a_fetch_landing_as_unregister_runs_is_never_saved() -> None:
    """The fetch's response lands a few loop rounds either side of unregister(): 100 tries, each must leave
    no snapshot, and each re-registration must go upstream (a snapshot left behind would be restored)."""
    clock = VirtualClock()
    store = MemoryStore()
    left_behind: list[int] = []
    with anyio.fail_after(60):
        async with LocalIdentityProvider() as idp, loopback_registry(clock, store=store) as reg:
            for attempt in range(100):
                idp.stall(math.inf)
                before = idp.request_count
                await reg.register(config_for(idp))
                await idp.wait_for_requests(before + 1)  # re-registering restored nothing: it went upstream
                idp.recover()  # the response is on its way...
                for _ in range(attempt % 10):  # ...and unregister() runs this many loop rounds later
                    await anyio.lowlevel.checkpoint()
                assert await reg.unregister(TENANT, PROVIDER)
                await clock.settle()
                if await store.load(TENANT, PROVIDER) is not None:
                    left_behind.append(attempt)
                    await store.delete(TENANT, PROVIDER)  # so the next attempt starts clean
    assert left_behind == []


class _LoggedGatedStore(MemoryStore):
    """A MemoryStore whose saves all wait for ``gate``, and which logs its writes in order."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.log: list[str] = []

    async def save(self, snapshot: Snapshot) -> None:
        self.log.append(f"save started {snapshot.jwks_url}")
        await self.gate.wait()
        await super().save(snapshot)
        self.log.append(f"saved {snapshot.jwks_url}")

    async def delete(self, tenant: str, provider: str) -> None:
        await super().delete(tenant, provider)
        self.log.append("deleted")


async def test_unregister_returns_after_a_save_already_under_way_and_deletes_it() -> None:
    clock = VirtualClock()
    store = _LoggedGatedStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock, store=store) as reg:
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await clock.settle()
            assert store.log == [f"save started {idp.jwks_url}"]  # the persister's save is under way

            async def unregister() -> None:
                assert await reg.unregister(TENANT, PROVIDER)
                store.log.append("unregister returned")

            async with anyio.create_task_group() as tg:
                tg.start_soon(unregister)
                await clock.settle()
                store.gate.set()
            await clock.settle()
            assert store.log[-1] == "unregister returned"  # nothing was written after it returned
            assert await store.load(TENANT, PROVIDER) is None


async def test_a_replaced_registrations_save_in_flight_never_overwrites_its_successors() -> None:
    clock = VirtualClock()
    store = _LoggedGatedStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as old, LocalIdentityProvider() as new:
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(old))
                await reg.refresh(TENANT, PROVIDER)
                await clock.settle()  # the old registration's save is under way
                await reg.register(config_for(new))  # another URL: nothing kept, a fetch of its own
                await reg.refresh(TENANT, PROVIDER)
                store.gate.set()
                await clock.settle()
                saved = await store.load(TENANT, PROVIDER)
                assert saved is not None and saved.jwks_url == new.jwks_url
            assert store.log[-1] == f"saved {new.jwks_url}"
