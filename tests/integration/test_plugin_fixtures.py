"""The pytest plugin's fixtures (``local_idp``, ``virtual_clock``), used the way a user's test suite would.

The fixtures are not imported or declared in a conftest: they arrive through the ``pytest11`` entry
point of the installed package, so these tests also prove the plugin is registered.
"""

from __future__ import annotations

import anyio

from jwks_cache import ProviderConfig, Registry
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

TENANT, PROVIDER = "acme", "local"


def registry(clock: VirtualClock) -> Registry:
    # the fixture IdP serves plain HTTP on 127.0.0.1: both floors must be opened explicitly
    return Registry(require_https=False, allow_private_networks=True, clock=clock)


def config(idp: LocalIdentityProvider) -> ProviderConfig:
    # no jitter, so the refresh lands exactly at max-age - refresh_early
    return ProviderConfig(
        tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, prefetch_jitter=0.0
    )


async def test_local_idp_fixture_is_served_and_the_first_lookup_fetches_once(
    local_idp: LocalIdentityProvider, virtual_clock: VirtualClock
) -> None:
    with anyio.fail_after(10):
        async with registry(virtual_clock) as reg:
            await reg.register(config(local_idp))
            assert local_idp.request_count == 0  # register() does no I/O
            kid = local_idp.kids[0]
            assert (await reg.get_key(TENANT, PROVIDER, kid)).kid == kid
            assert reg.get_key_nowait(TENANT, PROVIDER, kid).kid == kid
            assert local_idp.request_count == 1
            assert reg.status(TENANT, PROVIDER).key_ids == tuple(local_idp.kids)


async def test_advancing_the_virtual_clock_past_refresh_sends_a_revalidation(
    local_idp: LocalIdentityProvider, virtual_clock: VirtualClock
) -> None:
    local_idp.cache_control = "max-age=300"
    with anyio.fail_after(10):
        async with registry(virtual_clock) as reg:
            await reg.register(config(local_idp))
            await reg.get_key(TENANT, PROVIDER, local_idp.kids[0])
            await virtual_clock.advance(269.0)  # refresh due at 300 - refresh_early 30
            assert local_idp.request_count == 1
            await virtual_clock.advance(1.5)
            assert local_idp.request_count == 2
            assert "if-none-match" in local_idp.requests[-1].headers  # a conditional GET, answered 304
            status = reg.status(TENANT, PROVIDER)
            assert status.refreshes == 2 and status.error_count == 0


async def test_rotation_at_the_local_idp_reaches_verify_after_the_next_refresh(
    local_idp: LocalIdentityProvider, virtual_clock: VirtualClock
) -> None:
    local_idp.cache_control = "max-age=300"
    with anyio.fail_after(10):
        async with registry(virtual_clock) as reg:
            await reg.register(config(local_idp))
            old = local_idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, old)
            new = local_idp.rotate()
            await virtual_clock.advance(271.0)
            assert local_idp.request_count == 2
            assert new in reg.status(TENANT, PROVIDER).key_ids
            assert old not in reg.status(TENANT, PROVIDER).key_ids  # a refresh replaces the whole set
            # verify() reads the registry's clock too, so token times come from virtual wall time
            token = local_idp.mint({"sub": "alice", "exp": int(virtual_clock.time()) + 60}, kid=new)
            assert (await reg.verify(token, tenant=TENANT, provider=PROVIDER))["sub"] == "alice"


async def test_an_idp_outage_after_warm_up_keeps_serving_cached_keys(
    local_idp: LocalIdentityProvider, virtual_clock: VirtualClock
) -> None:
    local_idp.cache_control = "max-age=300"
    with anyio.fail_after(10):
        async with registry(virtual_clock) as reg:
            await reg.register(config(local_idp))
            kid = local_idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            local_idp.fail(503)
            await virtual_clock.advance(271.0)
            assert local_idp.request_count >= 2  # the refresh was attempted and failed
            assert (await reg.get_key(TENANT, PROVIDER, kid)).kid == kid
            assert reg.status(TENANT, PROVIDER).error_count >= 1
