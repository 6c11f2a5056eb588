"""The Registry's public read-only views: what the CLI, the control plane and dashboards read."""

from __future__ import annotations

import anyio
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import NotRegisteredError, ServedJwks
from jwks_cache.testing import LocalIdentityProvider, VirtualClock


async def test_served_jwks_is_the_resolved_set_with_its_freshness_and_every_key() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with LocalIdentityProvider(keys=2) as idp, loopback_registry(clock) as reg:
            idp.cache_control = "max-age=300"
            await reg.register(config_for(idp, prefetch_jitter=0.0))
            served = await reg.served_jwks(TENANT, PROVIDER)
            assert isinstance(served, ServedJwks)
            assert [k["kid"] for k in served.jwks["keys"]] == idp.kids
            assert all("d" not in k for k in served.jwks["keys"])  # public members only
            assert [(k.kid, k.served, k.reason) for k in served.keys] == [(kid, True, None) for kid in idp.kids]
            assert (served.ttl, served.fresh_for, served.jwks_url) == (300.0, 300.0, idp.jwks_url)
            await clock.advance(100)
            assert (await reg.served_jwks(TENANT, PROVIDER)).fresh_for == 200.0
            assert idp.request_count == 1  # a view never fetches a set it holds


async def test_registration_and_is_registered_follow_register_and_unregister() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry(VirtualClock()) as reg:
            assert not reg.is_registered(TENANT, PROVIDER)
            await reg.register(config_for(idp, min_ttl=60))
            assert reg.is_registered(TENANT, PROVIDER)
            assert reg.registration(TENANT, PROVIDER).min_ttl == 60
            assert reg.seconds_until_refresh(TENANT, PROVIDER) <= 0  # nothing fetched yet: due now
            await reg.refresh(TENANT, PROVIDER)
            assert 0 < reg.seconds_until_refresh(TENANT, PROVIDER) <= 86400
            await reg.unregister(TENANT, PROVIDER)
            assert not reg.is_registered(TENANT, PROVIDER)
            with pytest.raises(NotRegisteredError):
                reg.registration(TENANT, PROVIDER)
        assert not reg.is_registered(TENANT, PROVIDER)  # closed: nothing is registered
