"""Deeply nested documents from an identity provider fail one provider's refresh, never the Registry.

msgspec recursed into members it does not even keep (a discovery document's unknown ones), and
the RecursionError it raised escaped the refresh and ended the Registry's task group: every
tenant's lookups failed. Now the nesting bound refuses such a document as InvalidJwksError.
"""

from __future__ import annotations

import anyio
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import InvalidJwksError, ProviderState
from jwks_cache._jose._nesting import TOO_DEEP
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

OTHER = "other"


def deep_discovery(idp: LocalIdentityProvider, depth: int = 5_000) -> bytes:
    """A ~10 KB discovery document, valid but for one unknown member nesting ``depth`` arrays."""
    head = f'{{"issuer": "{idp.issuer}", "jwks_uri": "{idp.jwks_url}", "x": '.encode()
    return head + b"[" * depth + b"]" * depth + b"}"


async def test_a_deep_discovery_document_fails_its_provider_only() -> None:
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as hostile,
            LocalIdentityProvider() as healthy,
            loopback_registry() as reg,
        ):
            hostile.set_discovery_body(deep_discovery(hostile))
            await reg.register(config_for(hostile, jwks_url=None, issuer=hostile.issuer))
            await reg.register(config_for(healthy, provider=OTHER))
            with pytest.raises(InvalidJwksError, match=f"discovery document {TOO_DEEP}") as info:
                await reg.get_key(TENANT, PROVIDER, "key-1")
            assert info.value.url == hostile.discovery_url
            status = reg.status(TENANT, PROVIDER)
            assert status.state is ProviderState.FAILED
            assert status.last_error is not None and TOO_DEEP in status.last_error
            assert hostile.discovery_count >= 1 and hostile.request_count == 0  # no JWKS was fetched
            # the Registry is still open and serving the other provider
            claims = await reg.verify(healthy.mint({"sub": "bob"}), tenant=TENANT, provider=OTHER)
            assert claims["sub"] == "bob"
            assert [s.provider for s in reg.statuses() if s.state is ProviderState.READY] == [OTHER]


async def test_a_deep_discovery_document_on_refresh_keeps_the_last_good_keys() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=3600"  # the keys outlive the discovery document (300 s)
            await reg.register(config_for(idp, jwks_url=None, issuer=idp.issuer))
            key = await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            idp.set_discovery_body(deep_discovery(idp, depth=100_000))
            await clock.advance(301.0)
            with pytest.raises(InvalidJwksError, match=TOO_DEEP):
                await reg.refresh(TENANT, PROVIDER)
            assert reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0]) is key
            assert (await reg.verify(idp.mint({"sub": "a"}), tenant=TENANT, provider=PROVIDER))["sub"] == "a"
            idp.set_discovery_body(None)
            await reg.refresh(TENANT, PROVIDER)
            assert reg.status(TENANT, PROVIDER).last_error is None


async def test_a_deep_jwks_fails_the_refresh_and_keeps_the_last_good_keys() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp))
            key = await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            idp.set_body(b'{"keys": [], "x": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}")
            with pytest.raises(InvalidJwksError, match=rf"^\$: {TOO_DEEP}$"):
                await reg.refresh(TENANT, PROVIDER)
            assert reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0]) is key
