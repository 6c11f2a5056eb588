"""LocalIdentityProvider over real loopback sockets, on asyncio and trio."""

from __future__ import annotations

import gzip
import math
import warnings
import zlib

import anyio
import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet, RSAKey

from jwks_cache import ConfigError, JwksCacheError, KeyNotFoundError
from jwks_cache.testing._idp import LocalIdentityProvider, _crc32_of_zeros, _gzip_bomb
from jwks_cache.testing._keys import SUPPORTED_ALGORITHMS, KeyRing


async def test_serves_jwks_and_discovery_over_http() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            jwks = await client.get(idp.jwks_url)
            discovery = await client.get(idp.discovery_url)
    assert idp.jwks_url == f"http://127.0.0.1:{idp.port}/jwks"
    assert jwks.status_code == 200
    assert jwks.headers["content-type"] == "application/json"
    assert jwks.headers["cache-control"] == "max-age=300"
    assert [key["kid"] for key in jwks.json()["keys"]] == idp.kids == ["key-1", "key-2"]
    assert all("d" not in key for key in jwks.json()["keys"])
    assert discovery.json()["issuer"] == idp.issuer == idp.base_url
    assert discovery.json()["jwks_uri"] == idp.jwks_url
    assert (idp.request_count, idp.discovery_count) == (1, 1)


async def test_serves_jwks_over_tls_with_its_own_ca() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider(tls=True) as idp:
            async with httpx.AsyncClient(verify=idp.ssl_context) as client:
                response = await client.get(idp.jwks_url)
            async with httpx.AsyncClient() as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.get(idp.jwks_url)
    assert idp.jwks_url.startswith("https://127.0.0.1:")
    assert response.json()["keys"][0]["kid"] == "key-1"
    assert idp.cert_der[:1] == b"\x30"  # a DER SEQUENCE
    assert len(idp.spki_pin) == 44
    assert idp.request_count == 1  # the refused handshake never became a request


async def test_if_none_match_gets_304_with_caching_headers() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            first = await client.get(idp.jwks_url)
            etag = first.headers["etag"]
            second = await client.get(idp.jwks_url, headers={"If-None-Match": etag})
            other = await client.get(idp.jwks_url, headers={"If-None-Match": '"nope"'})
    assert etag.startswith('"')  # strong, not W/
    assert second.status_code == 304
    assert second.content == b""
    assert second.headers["etag"] == etag
    assert second.headers["cache-control"] == "max-age=300"
    assert other.status_code == 200
    assert idp.requests[1].headers["if-none-match"] == etag


async def test_if_modified_since_gets_304_until_the_set_changes() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            first = await client.get(idp.jwks_url)
            since = {"If-Modified-Since": first.headers["last-modified"]}
            unchanged = await client.get(idp.jwks_url, headers=since)
            idp.rotate()  # in the same second: Last-Modified must still move
            changed = await client.get(idp.jwks_url, headers=since)
    assert unchanged.status_code == 304
    assert changed.status_code == 200
    assert changed.headers["last-modified"] != first.headers["last-modified"]


async def test_fail_until_recover() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.fail(503)
            failed = [(await client.get(idp.jwks_url)).status_code for _ in range(3)]
            discovery = await client.get(idp.discovery_url)
            idp.recover()
            healthy = await client.get(idp.jwks_url)
    assert failed == [503, 503, 503]
    assert discovery.status_code == 200  # faults are for the JWKS only
    assert healthy.status_code == 200
    assert idp.request_count == 4


async def test_fail_times_then_healthy_with_custom_headers() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.fail(429, times=2, headers={"Retry-After": "1"}, body=b"slow down")
            responses = [await client.get(idp.jwks_url) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["retry-after"] == "1"
    assert responses[0].content == b"slow down"


async def test_rotate_changes_kids_and_etag() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            before = await client.get(idp.jwks_url)
            assert idp.rotate() == "key-3"
            after = await client.get(idp.jwks_url)
            revalidated = await client.get(idp.jwks_url, headers={"If-None-Match": before.headers["etag"]})
    assert idp.kids == ["key-2", "key-3"]
    assert [key["kid"] for key in after.json()["keys"]] == ["key-2", "key-3"]
    assert after.headers["etag"] != before.headers["etag"]
    assert revalidated.status_code == 200


async def test_minted_token_verifies_against_the_served_jwks() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            token = idp.mint({"sub": "alice"})
            before = KeySet.import_key_set((await client.get(idp.jwks_url)).json())
            idp.rotate()
            after = KeySet.import_key_set((await client.get(idp.jwks_url)).json())
            fresh = idp.mint({"sub": "bob"})
            retired = idp.mint({"sub": "eve"}, kid="key-1")
            issuer = idp.issuer
    decoded = jwt.decode(token, before, algorithms=["RS256"])
    assert decoded.header["kid"] == "key-1"
    assert decoded.claims == {"iss": issuer, "sub": "alice"}
    assert jwt.decode(fresh, after, algorithms=["RS256"]).header["kid"] == "key-2"
    with pytest.raises(JoseError):
        jwt.decode(retired, after, algorithms=["RS256"])


async def test_counts_jwks_and_discovery_requests_separately() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            for _ in range(3):
                await client.get(idp.jwks_url)
            await client.get(idp.discovery_url)
            missing = await client.get(f"{idp.base_url}/nope")
            await idp.wait_for_requests(3)  # already there: returns at once
    assert missing.status_code == 404
    assert (idp.request_count, idp.discovery_count) == (3, 1)
    assert [r.path for r in idp.requests] == ["/jwks"] * 3 + ["/.well-known/openid-configuration", "/nope"]


async def test_keep_alive_reuses_the_connection_and_close_ends_it() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            await client.get(idp.jwks_url)
            await client.get(idp.jwks_url, headers={"Connection": "close"})
            await client.get(idp.jwks_url)
    first, closing, after = (r.connection for r in idp.requests)
    assert first == closing
    assert after != closing


async def test_leaving_the_context_cuts_a_stall_promptly() -> None:
    outcome: list[BaseException] = []

    async def fetch(client: httpx.AsyncClient, url: str) -> None:
        try:
            await client.get(url)
        except httpx.TransportError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
            async with LocalIdentityProvider() as idp:
                idp.stall(math.inf)
                tg.start_soon(fetch, client, idp.jwks_url)
                await idp.wait_for_requests(1)
                started = anyio.current_time()
            assert anyio.current_time() - started < 1
    assert len(outcome) == 1


async def test_recover_releases_a_stalled_request() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.stall(math.inf)
            statuses: list[int] = []

            async def fetch() -> None:
                statuses.append((await client.get(idp.jwks_url)).status_code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch)
                await idp.wait_for_requests(1)
                idp.recover()
    assert statuses == [200]


async def test_gzip_bomb_is_announced_and_its_first_chunk_decodes() -> None:
    # A raw socket, not httpx: breaking out of httpx's stream leaves its async generators to the
    # GC, which trio reports as a ResourceWarning (encode/httpx#3686).
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp:
            idp.gzip_bomb(2 * 1024**3)
            async with await anyio.connect_tcp("127.0.0.1", idp.port) as stream:
                await stream.send(b"GET /jwks HTTP/1.1\r\nHost: idp\r\nAccept-Encoding: gzip\r\n\r\n")
                received = b""
                for _ in range(1000):
                    received += await stream.receive()
                    if len(received) > 8192:
                        break
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length < 3 * 1024**2  # 2 GiB of zeros on about 2 MB of wire
    inflated = zlib.decompressobj(wbits=31).decompress(body, 2 * 1024**2)  # max_length: we hold a bomb
    assert len(inflated) >= 1024**2
    assert inflated.count(0) == len(inflated)


async def test_small_gzip_bomb_inflates_fully_through_httpx() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.gzip_bomb(3 * 1024**2 + 5)
            response = await client.get(idp.jwks_url)
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == bytes(3 * 1024**2 + 5)


async def test_redirect_chain_of_hops_on_the_same_server() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient(follow_redirects=True) as client:
            idp.redirect([idp.redirect_url(hop) for hop in range(3)])
            response = await client.get(idp.jwks_url)
            idp.redirect_to("https://elsewhere.example/jwks")
            external = await client.get(idp.jwks_url, follow_redirects=False)
    assert response.status_code == 200
    assert [r.path for r in idp.requests] == ["/jwks", "/r/0", "/r/1", "/r/2", "/jwks"]
    assert len(response.history) == 3
    assert external.status_code == 302
    assert external.headers["location"] == "https://elsewhere.example/jwks"


async def test_set_body_serves_exact_bytes_and_slow_drip_delivers_them() -> None:
    hostile = b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.set_body(hostile)
            idp.slow_drip(3, 0)
            dripped = await client.get(idp.jwks_url)
            idp.recover()
            generated = await client.get(idp.jwks_url)
    assert dripped.content == hostile
    assert dripped.headers["etag"] != generated.headers["etag"]
    assert [key["kid"] for key in generated.json()["keys"]] == ["key-1", "key-2"]


async def test_lying_content_length_breaks_the_response() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.content_length = 10_000
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(idp.jwks_url)


async def test_discovery_document_can_be_overridden() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            idp.discovery_document = {"issuer": "https://impostor.example", "jwks_uri": idp.jwks_url}
            overridden = (await client.get(idp.discovery_url)).json()
            idp.recover()
            restored = (await client.get(idp.discovery_url)).json()
    assert overridden["issuer"] == "https://impostor.example"
    assert restored["issuer"] == idp.issuer


async def test_malformed_request_gets_400_and_close() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, await anyio.connect_tcp("127.0.0.1", idp.port) as stream:
            await stream.send(b"GET /jwks HTTP/1.1\r\n folded: header\r\n\r\n")
            reply = b""
            for _ in range(100):
                try:
                    reply += await stream.receive()
                except anyio.EndOfStream:
                    break
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
    assert idp.requests == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /jwks HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",
        b"GET /jwks HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"GET /jwks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /jwks HTTP/2.0\r\n\r\n",
        b"GET /jwks HTTP/1.1\r\n" + b"X: y\r\n" * 20_000 + b"\r\n",
        b"GET http://idp/jwks HTTP/1.1\r\n\r\n",
    ],
    ids=["unicode-digit", "huge-length", "chunked", "http2", "huge-head", "absolute-form"],
)
async def test_hostile_requests_get_an_error_status_and_the_server_survives(request_bytes: bytes) -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp:
            async with await anyio.connect_tcp("127.0.0.1", idp.port) as stream:
                await stream.send(request_bytes)
                reply = await stream.receive()
            weird = await _raw_get(idp.port, b"GET /r/\xb2 HTTP/1.1\r\nConnection: close\r\n\r\n")
            healthy = await _raw_get(idp.port, b"GET /jwks HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply[:10] == b"HTTP/1.1 4" or reply[:10] == b"HTTP/1.1 5"
    assert weird.startswith(b"HTTP/1.1 404 ")
    assert healthy.startswith(b"HTTP/1.1 200 ")


async def _raw_get(port: int, request: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        reply = b""
        for _ in range(1000):
            try:
                reply += await stream.receive()
            except anyio.EndOfStream:
                return reply
    return reply


async def test_caller_exception_comes_out_as_itself() -> None:
    with anyio.fail_after(5), pytest.raises(ZeroDivisionError):
        async with LocalIdentityProvider():
            1 / 0  # noqa: B018


# -- pure logic ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", sorted(SUPPORTED_ALGORITHMS))
def test_every_supported_algorithm_mints_verifiable_tokens(alg: str) -> None:
    ring = KeyRing(alg=alg, count=1)
    token = ring.mint({"sub": "x"}, issuer="https://idp.example")
    keys = KeySet.import_key_set(ring.public_jwks())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc deprecates "EdDSA"
        decoded = jwt.decode(token, keys, algorithms=[alg])
    assert decoded.claims == {"iss": "https://idp.example", "sub": "x"}
    assert decoded.header["alg"] == alg


def test_key_ring_rejects_misuse_with_library_errors() -> None:
    with pytest.raises(ConfigError, match="alg"):
        KeyRing(alg="HS256")
    ring = KeyRing(count=0)
    with pytest.raises(KeyNotFoundError):
        ring.mint({})
    with pytest.raises(KeyNotFoundError):
        ring.remove_key("key-9")


def test_mint_with_another_alg_signs_a_mismatched_token() -> None:
    ring = KeyRing(alg="RS256", count=1)
    token = ring.mint({}, alg="PS256", headers={"kid": "forged"})
    published = ring.public_jwks()["keys"][0]
    assert published["alg"] == "RS256"
    key = RSAKey.import_key({name: value for name, value in published.items() if name != "alg"})
    header = jwt.decode(token, key, algorithms=["PS256"]).header
    assert header == {"typ": "JWT", "alg": "PS256", "kid": "forged"}


@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20, 3 * (1 << 20) + 77])
def test_gzip_bomb_body_is_a_valid_gzip_member(size: int) -> None:
    length, chunks = _gzip_bomb(size)
    body = b"".join(chunks)
    assert len(body) == length
    assert gzip.decompress(body) == bytes(size)


def test_two_gib_bomb_costs_about_two_megabytes() -> None:
    length, _ = _gzip_bomb(2 * 1024**3)
    assert length < 3 * 1024**2


@pytest.mark.parametrize("size", [0, 1, 31, 4096, 123_457])
def test_crc_of_zeros_matches_zlib(size: int) -> None:
    assert _crc32_of_zeros(size) == zlib.crc32(bytes(size))


async def test_head_answers_headers_only_and_other_methods_405() -> None:
    with anyio.fail_after(5):
        async with LocalIdentityProvider() as idp, httpx.AsyncClient() as client:
            head = await client.head(idp.jwks_url)
            get = await client.get(idp.jwks_url)
            post = await client.post(idp.jwks_url, content=b"x")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert post.status_code == 405
    assert idp.request_count == 2  # only GET and HEAD reach the JWKS resource


async def test_misuse_raises_library_errors() -> None:
    idp = LocalIdentityProvider()
    with pytest.raises(JwksCacheError):
        _ = idp.jwks_url
    with pytest.raises(JwksCacheError):
        _ = idp.ssl_context
    with anyio.fail_after(5):
        async with idp:
            pass
        with pytest.raises(JwksCacheError):
            await idp.__aenter__()
        with pytest.raises(JwksCacheError, match="cannot listen"):
            async with LocalIdentityProvider(host="no-such-host.invalid"):
                pass
