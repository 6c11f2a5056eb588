"""Hop-by-hop policy of the fetch layer with an in-memory transport (pure logic; no sockets).

Redirects from a public host to private targets cannot be staged on loopback, so the transport and
the resolver are faked here; the loopback integration tests cover the real-socket paths.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from jwks_cache import FetchError, SecurityError
from jwks_cache._clock import SystemClock
from jwks_cache._http._fetch import Fetcher
from jwks_cache._http._policy import HopPolicy

POLICY = HopPolicy(require_https=True, allowed_domains=(), allow_private_networks=False, pinned_spki=())
PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    table = {"idp.example.com": PUBLIC_ADDRESS, "rebind.example.com": "10.0.0.7"}

    async def fake_getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]

    monkeypatch.setattr("jwks_cache._http._transport.getaddrinfo", fake_getaddrinfo)
    return table


def _fetcher(location: str, seen: list[str]) -> Fetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "idp.example.com":
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, json={"keys": []})

    return Fetcher(httpx.AsyncClient(transport=httpx.MockTransport(handler)), SystemClock())


@pytest.mark.parametrize(
    "target",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/jwks",
        "https://[::1]/jwks",
        "https://[::ffff:10.0.0.1]/jwks",
        "https://[::ffff:7f00:1]/jwks",
        "https://rebind.example.com/jwks",
        "http://idp.example.com/jwks",
        "https://user@idp.example.com@10.0.0.1/jwks",
    ],
)
async def test_redirect_to_a_private_or_downgraded_target_is_refused_before_sending(
    target: str, public_dns: dict[str, str]
) -> None:
    seen: list[str] = []
    fetcher = _fetcher(target, seen)
    with pytest.raises(SecurityError):
        await fetcher.get(
            "https://idp.example.com/jwks", policy=POLICY, max_redirects=3, max_bytes=1000, attempt_timeout=5
        )
    assert seen == ["https://idp.example.com/jwks"]


async def test_unresolvable_host_is_a_transient_fetch_error(public_dns: dict[str, str]) -> None:
    fetcher = _fetcher("https://idp.example.com/x", [])
    with pytest.raises(FetchError) as info:
        await fetcher.get(
            "https://nowhere.example.com/jwks", policy=POLICY, max_redirects=0, max_bytes=10, attempt_timeout=5
        )
    assert info.value.url == "https://nowhere.example.com/jwks"
    assert info.value.transient


def test_the_guarded_transport_still_owns_httpx_private_pool_attribute() -> None:
    """httpx offers no network-backend hook; if ``_pool`` moves, the pre-send checks silently vanish."""
    import httpcore

    from jwks_cache._http._transport import GuardedTransport, _GuardedBackend

    transport = GuardedTransport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)
    assert isinstance(transport._pool._network_backend, _GuardedBackend)
