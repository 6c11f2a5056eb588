"""LocalIdentityProvider: a real HTTP/1.1 (optionally TLS) JWKS and discovery server on loopback.

The HTTP layer is a small hand-written parser and writer over anyio byte streams instead of an
ASGI server or h11, because tests need byte-level control to play a hostile IdP: a stall before
the first byte, a slow drip, a lying ``Content-Length``, a gzip bomb streamed from a generator.
Only anyio is used, so the same server runs under asyncio and trio; every task lives in a task
group owned by the ``async with`` block, and leaving it closes every connection at once.
Delays here are real seconds on purpose: the point is to exercise real client timeouts.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http
import json
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from joserfc.jwk import KeySetSerialization

from .._errors import ConfigError, JwksCacheError
from ._keys import KeyRing

__all__ = ["LocalIdentityProvider", "RecordedRequest"]

_MAX_HEAD_BYTES: Final = 16 * 1024
_MAX_HEADERS: Final = 100
_MAX_REQUEST_BODY_BYTES: Final = 64 * 1024
_MAX_REQUESTS_PER_CONNECTION: Final = 10_000
_MAX_RECORDED_REQUESTS: Final = 10_000
_IDLE_TIMEOUT_S: Final = 60.0
_TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0
_LINGER_S: Final = 1.0
_LINGER_MAX_READS: Final = 256
_BOMB_BLOCK_BYTES: Final = 1 << 20
_BOMB_BATCH_BLOCKS: Final = 64
_JWKS_PATH: Final = "/jwks"
_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
_REDIRECT_PREFIX: Final = "/r/"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
# A client gone mid-exchange is normal for a server that tests hang up on; never an error here.
_PEER_GONE: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    ssl.SSLError,
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the provider parsed, for assertions such as "If-None-Match was sent"."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names; repeated fields joined with ", "
    connection: int  # serial of the TCP connection, equal across keep-alive reuse


@dataclass(slots=True)
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: Iterator[bytes] | None = None  # streamed instead of body; length must be set
    length: int | None = None  # advertised Content-Length; None means len(body)
    drip: tuple[int, float] | None = None
    close: bool = False


@dataclass(slots=True)
class _Failure:
    status: int
    times: int | None
    body: bytes
    headers: dict[str, str]


class _HttpError(Exception):
    """A request we refuse to parse; answered with ``status`` and the connection closed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class LocalIdentityProvider:
    """A JWKS and OIDC discovery server on 127.0.0.1 with scripted behaviour and faults.

    ``async with LocalIdentityProvider() as idp:`` listens on an ephemeral port; the JWKS is at
    :attr:`jwks_url` (also at ``/r/{n}``, the hops of :meth:`redirect`) and discovery at
    :attr:`discovery_url` (and under any path, for issuers with one: ``/common/v2.0/.well-known/...``).
    Knobs (``cache_control``, ``expires``, ``extra_headers``,
    ``etag_enabled``, ``last_modified_enabled``, ``content_type``, ``content_length``) and
    faults apply to JWKS responses; :meth:`recover` resets all of them but not the keys, the
    counters or the request log. TLS needs the ``trustme`` package.

    Args:
        tls: serve HTTPS with a certificate from a fresh ``trustme.CA``.
        keys: how many keys to publish at start (kids ``key-1``, ``key-2``, ...).
        alg: their algorithm: RS*/PS* (RSA 2048), ES256/384/512, EdDSA (Ed25519 keys), Ed25519,
            Ed448.
        host: the address to bind and the host of the URLs (and of the certificate).
    """

    def __init__(self, *, tls: bool = False, keys: int = 2, alg: str = "RS256", host: str = "127.0.0.1") -> None:
        self.host = host
        self.tls = tls
        self.request_count = 0  # JWKS requests, /jwks and /r/{n}
        self.discovery_count = 0
        self._keyring = KeyRing(alg=alg, count=keys)
        self._requests: deque[RecordedRequest] = deque(maxlen=_MAX_RECORDED_REQUESTS)
        self._connections = 0
        self._port: int | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._arrived: anyio.Event | None = None
        self._release: anyio.Event | None = None
        self._modified_at = int(time.time())
        self._ca: Any = None
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._cert_der = b""
        if tls:
            self._setup_tls()
        self._reset_behaviour()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise JwksCacheError("a LocalIdentityProvider can be entered only once")
        self._entered = True
        self._arrived = anyio.Event()
        self._release = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            self._port = await tg.start(self._serve)
        except BaseException:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()  # cuts stalls and drips mid-response
            # The body's own exception is not handed to the group, so it surfaces as itself.
            await tg.__aexit__(None, None, None)
            self._keyring.release()  # RSA keys are slow to make: later providers reuse them

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        except OSError as exc:
            raise JwksCacheError(f"cannot listen on {self.host}: {exc}") from exc
        async with listener, anyio.create_task_group() as connections:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(self._handle, task_group=connections)

    # -- addresses, TLS material, observations ---------------------------------------------

    @property
    def port(self) -> int:
        """The ephemeral port the provider listens on."""
        if self._port is None:
            raise JwksCacheError("the LocalIdentityProvider is not running; use it in `async with`")
        return self._port

    @property
    def base_url(self) -> str:
        """``http(s)://host:port``, no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def issuer(self) -> str:
        """The OIDC issuer: the base URL."""
        return self.base_url

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}{_JWKS_PATH}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}{_DISCOVERY_PATH}"

    def redirect_url(self, hop: int) -> str:
        """The URL of hop ``hop`` (0-based) of a :meth:`redirect` chain on this server."""
        return f"{self.base_url}{_REDIRECT_PREFIX}{hop}"

    @property
    def ca(self) -> Any:
        """The ``trustme.CA`` that issued the server certificate (tls only)."""
        self._require_tls()
        return self._ca

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting :attr:`ca`, for ``httpx.AsyncClient(verify=...)``."""
        self._require_tls()
        assert self._client_ssl is not None
        return self._client_ssl

    @property
    def cert_der(self) -> bytes:
        """The leaf certificate, DER-encoded."""
        self._require_tls()
        return self._cert_der

    @property
    def spki_pin(self) -> str:
        """Base64 SHA-256 of the leaf's SubjectPublicKeyInfo, as ``ProviderConfig.pinned_spki`` wants."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        public_key = x509.load_der_x509_certificate(self.cert_der).public_key()
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every parsed request (the last 10 000), oldest first."""
        return list(self._requests)

    async def wait_for_requests(self, count: int) -> None:
        """Wait until :attr:`request_count` reaches ``count``; bound it with ``fail_after``."""
        while self.request_count < count:
            assert self._arrived is not None, "use inside `async with`"
            await self._arrived.wait()

    def _setup_tls(self) -> None:
        try:
            import trustme
        except ImportError as exc:
            raise ConfigError("tls=True needs the trustme package (pip install trustme)") from exc
        self._ca = trustme.CA()
        cert = self._ca.issue_cert(self.host)
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_ssl)
        self._server_ssl.set_alpn_protocols(["http/1.1"])
        self._client_ssl = ssl.create_default_context()
        self._ca.configure_trust(self._client_ssl)
        self._cert_der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode("ascii"))

    def _require_tls(self) -> None:
        if not self.tls:
            raise JwksCacheError("this LocalIdentityProvider was created without tls=True")

    # -- keys ------------------------------------------------------------------------------

    @property
    def kids(self) -> list[str]:
        """The published kids, oldest first."""
        return self._keyring.kids

    @property
    def jwks(self) -> KeySetSerialization:
        """The generated JWK Set document (public members), whatever :meth:`set_body` serves."""
        return self._keyring.public_jwks()

    def mint(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        alg: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a JWT; ``iss`` defaults to :attr:`issuer`, ``kid`` to the oldest published key.

        Retired kids still sign. See :meth:`KeyRing.mint`.
        """
        return self._keyring.mint(claims, kid=kid, alg=alg, headers=headers, issuer=self.issuer)

    def rotate(self) -> str:
        """Publish a new key and retire the oldest; returns the new kid."""
        kid = self._keyring.rotate()
        self._touch()
        return kid

    def add_key(
        self, *, alg: str | None = None, kid: str | None = None, members: Mapping[str, Any] | None = None
    ) -> str:
        """Publish a new key; returns its kid. ``members`` go into its JWK as well (an ``issuer``, say)."""
        kid = self._keyring.add_key(alg=alg, kid=kid, members=members)
        self._touch()
        return kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing ``kid`` (it can still :meth:`mint`)."""
        self._keyring.remove_key(kid)
        self._touch()

    def _touch(self) -> None:
        # Last-Modified has 1 s resolution; moving it at least 1 s per change means a client
        # revalidating with If-Modified-Since alone can never get a 304 for a changed set.
        self._modified_at = max(self._modified_at + 1, int(time.time()))

    # -- behaviour and faults --------------------------------------------------------------

    def _reset_behaviour(self) -> None:
        self.cache_control: str | None = "max-age=300"
        self.expires: str | None = None
        self.extra_headers: dict[str, str] = {}
        self.etag_enabled = True
        self.last_modified_enabled = True
        self.content_type = "application/json"
        self.content_length: int | None = None  # a lie to advertise; the connection closes after
        self._discovery_override: dict[str, Any] | None = None
        self._discovery_body: bytes | None = None
        self._failure: _Failure | None = None
        self._stall_s = 0.0
        self._body: bytes | None = None
        self._drip: tuple[int, float] | None = None
        self._bomb_size: int | None = None
        self._redirect: tuple[tuple[str, ...], int] | None = None

    def recover(self) -> None:
        """Back to a healthy provider: clears faults and knobs (keys, counters and log stay).

        Requests stalled right now are released and answered.
        """
        if self._body is not None:
            self._touch()
        self._reset_behaviour()
        if self._release is not None:
            self._release.set()
            self._release = anyio.Event()

    def fail(
        self,
        status: int,
        *,
        times: int | None = None,
        body: bytes = b'{"error":"injected failure"}',
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` JWKS requests (all until :meth:`recover` if None) with ``status``.

        ``headers`` carries e.g. ``{"Retry-After": "1"}`` for a 429.
        """
        if not 200 <= status <= 599:
            raise ConfigError(f"status must be in 200..599 (got {status!r})")
        if times is not None and times < 1:
            raise ConfigError(f"times must be >= 1 or None (got {times!r})")
        self._failure = _Failure(status, times, body, dict(headers or {}))

    def stall(self, seconds: float) -> None:
        """Hold JWKS requests ``seconds`` real seconds (``math.inf``: until recover/exit) before answering."""
        if not seconds >= 0:
            raise ConfigError(f"seconds must be >= 0 (got {seconds!r})")
        self._stall_s = seconds

    def set_body(self, body: bytes | None) -> None:
        """Serve these exact bytes as the JWKS (None: back to the generated set)."""
        self._body = body
        self._touch()

    def set_discovery_body(self, body: bytes | None) -> None:
        """Serve these exact bytes as the discovery document (None: back to :attr:`discovery_document`)."""
        self._discovery_body = body

    def slow_drip(self, bytes_per_chunk: int, interval: float) -> None:
        """Send JWKS bodies ``bytes_per_chunk`` bytes at a time, ``interval`` real seconds apart."""
        if bytes_per_chunk < 1 or not interval >= 0:
            raise ConfigError("slow_drip needs bytes_per_chunk >= 1 and interval >= 0")
        self._drip = (bytes_per_chunk, interval)

    def gzip_bomb(self, decompressed_size: int) -> None:
        """Answer JWKS requests with ``Content-Encoding: gzip`` zeros inflating to this many bytes.

        The body is generated while it is sent, from one precompressed block, so even a 2 GiB
        bomb costs about 2 MB on the wire and almost nothing in memory or CPU.
        """
        if decompressed_size < 0:
            raise ConfigError(f"decompressed_size must be >= 0 (got {decompressed_size!r})")
        self._bomb_size = decompressed_size

    def redirect(self, chain: list[str], *, status: int = 302) -> None:
        """Make the JWKS path redirect to ``chain[0]``, and ``/r/{n}`` to ``chain[n + 1]``.

        ``/r/{n}`` past the end of the chain serves the JWKS, so
        ``idp.redirect([idp.redirect_url(i) for i in range(n)])`` is ``n`` hops on this server.
        """
        if status not in (301, 302, 303, 307, 308):
            raise ConfigError(f"status must be a redirect status (got {status!r})")
        self._redirect = (tuple(chain), status)

    def redirect_to(self, url: str, *, status: int = 302) -> None:
        """Make the JWKS path redirect to ``url`` (e.g. another server)."""
        self.redirect([url], status=status)

    @property
    def discovery_document(self) -> dict[str, Any]:
        """The discovery document served (a copy); assign a dict to override, None to restore."""
        if self._discovery_override is not None:
            return dict(self._discovery_override)
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self._keyring.alg],
        }

    @discovery_document.setter
    def discovery_document(self, document: Mapping[str, Any] | None) -> None:
        self._discovery_override = None if document is None else dict(document)

    # -- connections -----------------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        self._connections += 1
        connection = self._connections
        try:
            if self._server_ssl is not None:
                with anyio.move_on_after(_TLS_HANDSHAKE_TIMEOUT_S):
                    stream = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=self._server_ssl, standard_compatible=False
                    )
                if not isinstance(stream, TLSStream):
                    return
            await self._converse(stream, connection)
        except _PEER_GONE:
            pass
        finally:
            await anyio.aclose_forcefully(stream)

    async def _converse(self, stream: anyio.abc.ByteStream, connection: int) -> None:
        reader = BufferedByteReceiveStream(stream)
        for _ in range(_MAX_REQUESTS_PER_CONNECTION):
            parsed: tuple[RecordedRequest, bool] | None = None
            with anyio.move_on_after(_IDLE_TIMEOUT_S):
                try:
                    parsed = await _read_request(reader, connection)
                except _HttpError as exc:
                    await _write(stream, "GET", _Response(exc.status, [("Connection", "close")]))
                    await _linger(stream)
                    return
            if parsed is None:
                return  # end of stream or idle too long
            request, keep_alive = parsed
            self._requests.append(request)
            response = await self._route(request)
            keep_alive = keep_alive and not response.close
            if not keep_alive:
                response.headers.append(("Connection", "close"))
            await _write(stream, request.method, response)
            if not keep_alive:
                return

    async def _route(self, request: RecordedRequest) -> _Response:
        if request.method not in ("GET", "HEAD"):
            return _Response(405, [("Allow", "GET, HEAD")])
        if request.path == _JWKS_PATH:
            return await self._serve_jwks(request, hop=None)
        hop = request.path.removeprefix(_REDIRECT_PREFIX)
        if request.path.startswith(_REDIRECT_PREFIX) and _is_decimal(hop, max_digits=5):
            return await self._serve_jwks(request, hop=int(hop))
        if request.path.endswith(_DISCOVERY_PATH):  # any issuer path: {issuer}/.well-known/...
            self.discovery_count += 1
            body = self._discovery_body
            if body is None:
                body = json.dumps(self.discovery_document).encode()
            return _Response(200, [("Content-Type", "application/json")], body)
        return _Response(404, [("Content-Type", "text/plain")], b"not found")

    # -- the JWKS resource -----------------------------------------------------------------

    async def _serve_jwks(self, request: RecordedRequest, *, hop: int | None) -> _Response:
        self.request_count += 1
        assert self._arrived is not None
        self._arrived.set()
        self._arrived = anyio.Event()
        if self._stall_s > 0:
            release = self._release
            assert release is not None
            with anyio.move_on_after(self._stall_s):
                await release.wait()
        if (failure := self._failure) is not None:
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failure = None
            return _Response(failure.status, list(failure.headers.items()), failure.body)
        if self._redirect is not None:
            chain, status = self._redirect
            step = 0 if hop is None else hop + 1
            if step < len(chain):
                return _Response(status, [("Location", chain[step])])
        if self._bomb_size is not None:
            length, chunks = _gzip_bomb(self._bomb_size)
            headers = [("Content-Type", self.content_type), ("Content-Encoding", "gzip")]
            return _Response(200, headers, chunks=chunks, length=length)
        return self._representation(request)

    def _representation(self, request: RecordedRequest) -> _Response:
        body = self._body if self._body is not None else json.dumps(self._keyring.public_jwks()).encode()
        headers = self._caching_headers(body)
        if _not_modified(request.headers, dict(headers)):
            return _Response(304, headers)
        headers.append(("Content-Type", self.content_type))
        lying = self.content_length is not None and self.content_length != len(body)
        return _Response(200, headers, body, length=self.content_length, drip=self._drip, close=lying)

    def _caching_headers(self, body: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.cache_control is not None:
            headers.append(("Cache-Control", self.cache_control))
        if self.expires is not None:
            headers.append(("Expires", self.expires))
        if self.etag_enabled:
            headers.append(("ETag", f'"{hashlib.sha256(body).hexdigest()[:32]}"'))
        if self.last_modified_enabled:
            headers.append(("Last-Modified", email.utils.formatdate(self._modified_at, usegmt=True)))
        headers.extend(self.extra_headers.items())
        return headers


# -- wire format ---------------------------------------------------------------------------


async def _read_request(reader: BufferedByteReceiveStream, connection: int) -> tuple[RecordedRequest, bool] | None:
    """Parse one request head (RFC 9112 §2-§6) and discard its body: (request, keep-alive), None at EOF."""
    try:
        head = await reader.receive_until(b"\r\n\r\n", _MAX_HEAD_BYTES)
    except anyio.IncompleteRead:
        return None
    except anyio.DelimiterNotFound:
        raise _HttpError(431) from None
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _HttpError(400)
    method, target, version = (part.decode("latin-1") for part in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HttpError(505)
    headers = _parse_fields(lines[1:])
    await _discard_body(reader, headers)
    if not target.startswith("/"):
        raise _HttpError(400)  # origin-form only (RFC 9112 §3.2.1); we are nobody's proxy
    path, _, query = target.partition("?")
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return RecordedRequest(method, path, query, headers, connection), keep_alive


def _parse_fields(lines: list[bytes]) -> dict[str, str]:
    if len(lines) > _MAX_HEADERS:
        raise _HttpError(431)
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        # obs-fold and whitespace before the colon are rejected (RFC 9112 §5.1, §5.2)
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise _HttpError(400)
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _discard_body(reader: BufferedByteReceiveStream, headers: Mapping[str, str]) -> None:
    if "transfer-encoding" in headers:
        raise _HttpError(501)  # GET-only server: no chunked request bodies
    length = headers.get("content-length", "0").strip()
    if not _is_decimal(length, max_digits=18):
        raise _HttpError(400)
    if int(length) > _MAX_REQUEST_BODY_BYTES:
        raise _HttpError(413)
    if int(length):
        await reader.receive_exactly(int(length))


async def _linger(stream: anyio.abc.ByteStream) -> None:
    """Drain what the client still sends before closing (RFC 9112 §9.6).

    Closing with unread input makes the kernel send a TCP RST, which can destroy the error
    response still sitting in the client's buffer.
    """
    if not isinstance(stream, TLSStream):  # TLS has no half-close; its clients go by Connection: close
        await stream.send_eof()  # a client reading to EOF gets it now, not after the linger
    with anyio.move_on_after(_LINGER_S):
        for _ in range(_LINGER_MAX_READS):
            await stream.receive()


def _is_decimal(text: str, *, max_digits: int) -> bool:
    # str.isdigit alone admits "²", which int() rejects; the cap keeps int() cheap
    return text.isascii() and text.isdigit() and len(text) <= max_digits


def _not_modified(request: Mapping[str, str], response: Mapping[str, str]) -> bool:
    """RFC 9110 §13.1.2-§13.1.3: If-None-Match (weak comparison) wins over If-Modified-Since."""
    if "if-none-match" in request:
        etag = response.get("ETag")
        if etag is None:
            return False
        candidates = {tag.strip().removeprefix("W/") for tag in request["if-none-match"].split(",")}
        return "*" in candidates or etag in candidates
    since, modified = request.get("if-modified-since"), response.get("Last-Modified")
    if since is None or modified is None:
        return False
    try:
        return email.utils.parsedate_to_datetime(modified) <= email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored (RFC 9110 §13.1.3)


async def _write(stream: anyio.abc.ByteStream, method: str, response: _Response) -> None:
    status = response.status
    has_body = method != "HEAD" and status not in _NO_BODY_STATUSES
    length = response.length if response.length is not None else len(response.body)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    if status not in _NO_BODY_STATUSES:  # a 304's length would be the 200's, which we don't claim
        lines.append(f"Content-Length: {length}")
    await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not has_body:
        return
    if response.chunks is not None:
        for chunk in response.chunks:
            await stream.send(chunk)
    elif response.drip is not None:
        size, interval = response.drip
        for offset in range(0, len(response.body), size):
            if offset:
                await anyio.sleep(interval)
            await stream.send(response.body[offset : offset + size])
    elif response.body:
        await stream.send(response.body)


def _gzip_bomb(size: int) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, body chunks) of a gzip member (RFC 1952) of ``size`` zero bytes.

    After a full flush raw deflate restarts from an empty state, so every 1 MiB block of zeros
    compresses to the same bytes: compress one and repeat it, never the whole input.
    """
    blocks, rest = divmod(size, _BOMB_BLOCK_BYTES)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(_BOMB_BLOCK_BYTES)) + compressor.flush(zlib.Z_FULL_FLUSH)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    final = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # no name, mtime 0, max compression, unknown OS
    trailer = _crc32_of_zeros(size).to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    length = len(header) + blocks * len(block) + len(final) + len(trailer)

    def chunks() -> Iterator[bytes]:
        yield header
        batch = block * _BOMB_BATCH_BLOCKS
        for start in range(0, blocks, _BOMB_BATCH_BLOCKS):
            yield batch if blocks - start >= _BOMB_BATCH_BLOCKS else block * (blocks - start)
        yield final + trailer

    return length, chunks()


def _crc32_of_zeros(length: int) -> int:
    """``zlib.crc32(bytes(length))`` in O(log length): appending zeros is affine over GF(2)."""
    one = zlib.crc32(b"\0")
    # step[i] is the linear image of bit i, step[32] the constant: together f(c) = crc32(b"\0", c)
    step = [zlib.crc32(b"\0", 1 << bit) ^ one for bit in range(32)] + [one]

    def apply(matrix: list[int], crc: int) -> int:
        out = matrix[32]
        for bit in range(32):
            if crc >> bit & 1:
                out ^= matrix[bit]
        return out

    crc = 0
    while length:  # bounded by the bit length of `length`
        if length & 1:
            crc = apply(step, crc)
        step = [apply(step, column) ^ step[32] for column in step[:32]] + [apply(step, step[32])]
        length >>= 1
    return crc
