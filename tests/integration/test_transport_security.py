"""Transport attacks against a real TLS identity provider on 127.0.0.1 (trustme CA), both backends.

Each test asserts the exact error type and that keys cached before the attack are untouched.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from tests.helpers import PROVIDER, QUICK_RETRY, TENANT, config_for

from jwks_cache import (
    ConfigError,
    FetchError,
    ProviderConfig,
    Registry,
    ResponseTooLargeError,
    SecurityError,
)
from jwks_cache.testing import LocalIdentityProvider


@asynccontextmanager
async def tls_setup(**registry_kwargs: Any) -> AsyncIterator[tuple[LocalIdentityProvider, Registry]]:
    """A TLS IdP and a Registry that trusts its CA, with keys already cached."""
    registry_kwargs.setdefault("allow_private_networks", True)
    async with (
        LocalIdentityProvider(tls=True) as idp,
        httpx.AsyncClient(verify=idp.ssl_context) as client,
        Registry(http_client=client, **registry_kwargs) as reg,
    ):
        yield idp, reg


async def _cached_kids(reg: Registry) -> list[str]:
    return [k.kid for k in (await reg.resolve(TENANT, PROVIDER)).keys]


async def test_https_is_required_at_registration() -> None:
    async with LocalIdentityProvider() as idp, Registry(allow_private_networks=True) as reg:
        with pytest.raises(ConfigError, match="jwks_url"):
            await reg.register(ProviderConfig(tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url))
        with pytest.raises(ConfigError, match="require_https"):
            await reg.register(config_for(idp))  # require_https=False is below the registry floor


async def test_redirect_downgrade_to_http_is_refused() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg), LocalIdentityProvider() as plain:
            await reg.register(config_for(idp))
            before = await _cached_kids(reg)
            idp.redirect_to(plain.jwks_url)
            with pytest.raises(SecurityError, match="https"):
                await reg.refresh(TENANT, PROVIDER)
            assert plain.request_count == 0
            assert await _cached_kids(reg) == before


async def test_redirect_to_a_host_outside_the_allowlist_is_refused() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, allowed_domains=("127.0.0.1",)))
            before = await _cached_kids(reg)
            idp.redirect_to(idp.jwks_url.replace("127.0.0.1", "localhost"))
            with pytest.raises(SecurityError, match="localhost"):
                await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 2  # the redirecting answer only; the disallowed hop never sent
            assert await _cached_kids(reg) == before


async def test_redirect_loop_stops_at_the_cap() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, max_redirects=3))
            before = await _cached_kids(reg)
            idp.redirect_to(idp.jwks_url)
            with pytest.raises(SecurityError, match="redirects"):
                await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 1 + 4  # max_redirects + 1 requests per attempt, not retried
            assert await _cached_kids(reg) == before


@pytest.mark.parametrize(("hops", "ok"), [(10, True), (11, False)])
async def test_ten_hops_are_followed_and_eleven_refused(hops: int, ok: bool) -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, max_redirects=10))
            before = await _cached_kids(reg)
            idp.redirect([idp.redirect_url(i) for i in range(hops)])
            if ok:
                await reg.refresh(TENANT, PROVIDER)
            else:
                with pytest.raises(SecurityError):
                    await reg.refresh(TENANT, PROVIDER)
            assert await _cached_kids(reg) == before


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/jwks",
        "https://[::1]/jwks",
        "https://[::ffff:127.0.0.1]/jwks",
        "https://[::ffff:a9fe:a9fe]/jwks",
        "https://2130706433/jwks",
        "https://localhost/jwks",
    ],
)
async def test_private_address_literals_are_refused_by_default(url: str) -> None:
    async with Registry() as reg:
        with pytest.raises(ConfigError, match="jwks_url"):
            await reg.register(ProviderConfig(tenant=TENANT, provider=PROVIDER, jwks_url=url))


async def test_a_hostname_resolving_to_loopback_is_refused_by_default() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider(tls=True) as idp, httpx.AsyncClient(verify=idp.ssl_context) as client:
            async with Registry(http_client=client) as reg:
                await reg.register(config_for(idp, jwks_url=idp.jwks_url.replace("127.0.0.1", "vm")))
                with pytest.raises(SecurityError, match="127.0.0.1"):
                    await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 0  # refused before connecting


async def test_slow_drip_body_cannot_hold_a_fetch_past_the_attempt_timeout() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, retry=QUICK_RETRY))
            before = await _cached_kids(reg)
            idp.etag_enabled = idp.last_modified_enabled = False  # a full body, not a 304
            idp.slow_drip(1, 0.05)
            started = anyio.current_time()
            with pytest.raises(FetchError, match="timed out|deadline"):
                await reg.refresh(TENANT, PROVIDER)
            assert anyio.current_time() - started < QUICK_RETRY.deadline + 0.5
            assert await _cached_kids(reg) == before


async def test_gzip_bomb_is_refused_while_streaming_without_allocating_it() -> None:
    with anyio.fail_after(20):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp))
            before = await _cached_kids(reg)
            idp.gzip_bomb(2 * 2**30)
            tracemalloc.start()
            try:
                with pytest.raises(ResponseTooLargeError):
                    await reg.refresh(TENANT, PROVIDER)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 32 * 2**20  # bounded by max_response_bytes, not by the 2 GiB it inflates to
            assert await _cached_kids(reg) == before


async def test_oversized_body_is_refused() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, max_response_bytes=4096))
            before = await _cached_kids(reg)
            padded = dict(idp.jwks)
            padded["padding"] = "x" * 10_000
            idp.set_body(json.dumps(padded).encode())
            with pytest.raises(ResponseTooLargeError):
                await reg.refresh(TENANT, PROVIDER)
            idp.content_length = 100  # lying Content-Length: still capped while streaming
            with pytest.raises((ResponseTooLargeError, FetchError)):
                await reg.refresh(TENANT, PROVIDER)
            assert await _cached_kids(reg) == before


async def test_html_error_page_with_200_is_refused_clearly() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp))
            before = await _cached_kids(reg)
            idp.content_type = "text/html; charset=utf-8"
            idp.set_body(b"<html><body>Sign in to the Wi-Fi</body></html>")
            with pytest.raises(SecurityError, match="text/html"):
                await reg.refresh(TENANT, PROVIDER)
            assert await _cached_kids(reg) == before


async def test_right_pin_passes_and_wrong_pin_is_refused() -> None:
    wrong = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg):
            await reg.register(config_for(idp, pinned_spki=(wrong, idp.spki_pin)))
            before = await _cached_kids(reg)
            assert before == idp.kids
            await reg.register(config_for(idp, pinned_spki=(wrong,)))
            with pytest.raises(SecurityError, match="pin"):
                await reg.refresh(TENANT, PROVIDER)
            # keys fetched under the old pins are not kept: a changed pin set may mean the old
            # certificate is no longer trusted
            with pytest.raises(SecurityError, match="pin"):
                await _cached_kids(reg)


async def test_refused_hop_is_not_retried() -> None:
    with anyio.fail_after(10):
        async with tls_setup() as (idp, reg), LocalIdentityProvider() as plain:
            await reg.register(config_for(idp))
            await _cached_kids(reg)
            idp.redirect_to(plain.jwks_url)
            with pytest.raises(SecurityError):
                await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 2


async def test_a_private_ca_given_as_ssl_context_is_trusted_and_nothing_else_is() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider(tls=True) as idp:
            async with Registry(allow_private_networks=True) as reg:  # the system CAs only
                await reg.register(config_for(idp))
                with pytest.raises(FetchError, match="certificate"):
                    await reg.refresh(TENANT, PROVIDER)
            async with Registry(ssl_context=idp.ssl_context, allow_private_networks=True) as reg:
                await reg.register(config_for(idp, pinned_spki=(idp.spki_pin,)))
                await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 1
            with pytest.raises(ConfigError, match="^ssl_context: "):
                Registry(ssl_context=idp.ssl_context, http_client=httpx.AsyncClient())


async def test_registry_transport_refuses_a_wrong_pin_before_sending_the_request() -> None:
    wrong = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider(tls=True) as idp,
            Registry(ssl_context=idp.ssl_context, allow_private_networks=True) as reg,
        ):
            await reg.register(config_for(idp, pinned_spki=(wrong,)))
            with pytest.raises(SecurityError, match="pin"):
                await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 0  # refused after the handshake, before a byte of HTTP
            await reg.register(config_for(idp, pinned_spki=(idp.spki_pin,)))
            await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 1


async def test_registry_transport_connects_only_to_the_address_it_checked() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider(tls=True) as idp:
            async with Registry(ssl_context=idp.ssl_context) as reg:
                await reg.register(config_for(idp, jwks_url=idp.jwks_url.replace("127.0.0.1", "vm")))
                with pytest.raises(SecurityError, match="127.0.0.1"):
                    await reg.refresh(TENANT, PROVIDER)
            assert idp.request_count == 0


async def test_a_redirect_to_a_host_httpx_cannot_encode_fails_the_refresh_not_the_registry() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, Registry(require_https=False, allow_private_networks=True) as reg:
            await reg.register(config_for(idp))
            before = await _cached_kids(reg)
            idp.redirect_to("http://xn--rp17e/jwks")
            with pytest.raises(SecurityError):
                await reg.refresh(TENANT, PROVIDER)
            assert await _cached_kids(reg) == before
            with pytest.raises(ConfigError, match="jwks_url"):
                await reg.register(config_for(idp, jwks_url="http://xn--rp17e/jwks"))


async def test_a_pooled_connection_is_not_reused_for_a_provider_whose_pin_it_fails() -> None:
    wrong = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider(tls=True) as idp,
            Registry(ssl_context=idp.ssl_context, allow_private_networks=True) as reg,
        ):
            await reg.register(config_for(idp))  # no pin: opens and pools a connection
            await reg.refresh(TENANT, PROVIDER)
            served = idp.request_count
            await reg.register(config_for(idp, provider="pinned", pinned_spki=(wrong,)))
            with pytest.raises(SecurityError, match="pin"):
                await reg.refresh(TENANT, "pinned")
            assert idp.request_count == served  # refused before the request was written
