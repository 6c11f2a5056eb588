"""A 304 updates the stored response's headers (RFC 9111 §4.3.4); it does not replace them wholesale."""

from __future__ import annotations

import email.utils
import time

import anyio
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import MemoryStore, Registry
from jwks_cache.testing import LocalIdentityProvider, VirtualClock


def _lifetime(reg: Registry) -> float:
    """Seconds between the last good fetch (or 304) and the expiry the registry computed from it."""
    status = reg.status(TENANT, PROVIDER)
    assert status.expires_at is not None and status.last_refresh is not None
    return (status.expires_at - status.last_refresh).total_seconds()


def _http_date_in(seconds: float) -> str:
    # the IdP's Date header is real time (the registry's clock is virtual): Expires must be too
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


async def test_a_304_without_cache_control_keeps_the_stored_max_age() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=20000"
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            assert _lifetime(reg) == pytest.approx(20000)
            idp.cache_control = None  # the IdP's 304 carries validators only, as many do
            await clock.advance(100)
            await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 2 and "if-none-match" in idp.requests[-1].headers
            assert reg.status(TENANT, PROVIDER).revalidations == 1
            assert _lifetime(reg) == pytest.approx(20000)  # not the 300 s default nor a heuristic
            await clock.advance(19000)  # the scheduler does not come back before the stored max-age ends
            assert idp.request_count == 2


async def test_a_304_with_its_own_max_age_replaces_the_stored_one() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=20000"
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            idp.cache_control = "max-age=600"
            await reg.refresh(TENANT, PROVIDER)
            assert reg.status(TENANT, PROVIDER).revalidations == 1
            assert _lifetime(reg) == pytest.approx(600)
            idp.cache_control = None  # and the next 304 keeps the one the last 304 gave
            await reg.refresh(TENANT, PROVIDER)
            assert _lifetime(reg) == pytest.approx(600)


async def test_a_stored_expires_is_kept_and_a_new_one_replaces_it() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control, idp.expires = None, _http_date_in(20000)
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            assert _lifetime(reg) == pytest.approx(20000, abs=5)
            idp.expires = None  # a 304 with its own Date but no Expires: the stored one, from the new Date
            await reg.refresh(TENANT, PROVIDER)
            assert reg.status(TENANT, PROVIDER).revalidations == 1
            assert _lifetime(reg) == pytest.approx(20000, abs=5)
            idp.expires = _http_date_in(5000)  # a 304 carrying a new Expires replaces it
            await reg.refresh(TENANT, PROVIDER)
            assert reg.status(TENANT, PROVIDER).revalidations == 2
            assert _lifetime(reg) == pytest.approx(5000, abs=5)


async def test_validators_are_kept_when_a_304_omits_them_and_replaced_when_it_sends_new_ones() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=20000"
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            first = idp.requests[-1]
            assert "if-none-match" not in first.headers
            idp.fail(304, times=1, body=b"")  # a bare 304: no validators, no caching headers
            await reg.refresh(TENANT, PROVIDER)
            sent = idp.requests[-1].headers
            assert reg.status(TENANT, PROVIDER).revalidations == 1
            assert _lifetime(reg) == pytest.approx(20000)
            idp.fail(304, times=1, body=b"", headers={"ETag": '"renamed"'})
            await reg.refresh(TENANT, PROVIDER)
            assert idp.requests[-1].headers["if-none-match"] == sent["if-none-match"]  # kept by the bare 304
            await reg.refresh(TENANT, PROVIDER)
            assert idp.requests[-1].headers["if-none-match"] == '"renamed"'  # replaced by the one that sent it
            assert idp.requests[-1].headers["if-modified-since"] == sent["if-modified-since"]
            assert reg.status(TENANT, PROVIDER).revalidations == 2  # '"renamed"' matches nothing: a 200


async def test_a_restored_set_revalidated_by_a_bare_304_keeps_the_stored_max_age() -> None:
    clock = VirtualClock()
    store = MemoryStore()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            idp.cache_control = "max-age=20000"
            async with loopback_registry(clock, store=store) as reg:
                await reg.register(config_for(idp))
                await reg.refresh(TENANT, PROVIDER)
            idp.cache_control = None
            async with loopback_registry(clock, store=store) as reg:  # a restart
                await reg.register(config_for(idp))
                assert idp.request_count == 1  # restored, not fetched
                await reg.refresh(TENANT, PROVIDER)
                assert reg.status(TENANT, PROVIDER).revalidations == 1
                assert _lifetime(reg) == pytest.approx(20000)


async def test_revalidations_answered_304_reuse_one_connection() -> None:
    """A 304's empty body is read, so the connection goes back to the pool: no TCP (or TLS) setup
    per revalidation."""
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=60"
            await reg.register(config_for(idp))
            await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            for _ in range(4):
                await clock.advance(60)
            assert reg.status(TENANT, PROVIDER).revalidations >= 3
            assert len({r.connection for r in idp.requests}) == 1


async def test_a_re_registration_that_keeps_the_set_keeps_its_stored_cache_headers() -> None:
    """Re-dating a kept set (a tighter max_ttl) must not drop the headers a later bare 304 keeps."""
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=20000"
            await reg.register(config_for(idp))
            await reg.refresh(TENANT, PROVIDER)
            await reg.register(config_for(idp, max_ttl=10000.0))  # same source and rules: keys kept
            assert idp.request_count == 1
            assert _lifetime(reg) == pytest.approx(10000)
            idp.cache_control = None
            await reg.refresh(TENANT, PROVIDER)  # a bare 304
            assert reg.status(TENANT, PROVIDER).revalidations == 1
            assert _lifetime(reg) == pytest.approx(10000)  # the stored 20000 s, clamped: no heuristic
