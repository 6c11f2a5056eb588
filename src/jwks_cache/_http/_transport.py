"""The registry's own HTTP transport: the policy judges each connection *before* a byte is sent.

Checking the peer address and the certificate pin when the response arrives (as ``_fetch`` also
does, for clients callers bring) still lets one request reach a rebound private address or a server
with the wrong key. Here the network backend resolves the host itself, refuses non-public answers,
connects to the address it checked (so DNS cannot change between check and connect), and verifies
the SPKI pin right after the TLS handshake. httpx has no public hook for a network backend, hence
the one private attribute (``_pool``) this module replaces; a test pins that contract.
"""

from __future__ import annotations

import contextvars
import os
import socket
import ssl
import typing
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx
from anyio import getaddrinfo

from .._errors import ConfigError
from ._policy import HopPolicy, check_address, check_pin

__all__ = [
    "GuardedTransport",
    "ca_file_context",
    "default_ssl_context",
    "guarded_client",
    "hop_policy",
    "resolve_checked",
]

#: The policy of the hop being sent, read by the backend when it opens a connection for it.
_HOP: contextvars.ContextVar[tuple[HopPolicy, str] | None] = contextvars.ContextVar("jwks_cache_hop", default=None)


@contextmanager
def hop_policy(policy: HopPolicy, url: str) -> Iterator[None]:
    """Make ``policy`` judge any connection opened while sending the request for ``url``."""
    token = _HOP.set((policy, url))
    try:
        yield
    finally:
        _HOP.reset(token)


async def resolve_checked(host: str, port: int, policy: HopPolicy, *, url: str) -> list[str]:
    """Every address DNS gives for ``host``, each judged by the policy (SSRF); OSError if DNS fails."""
    infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        check_address(address, policy, url=url)
    return addresses


class _GuardedStream(httpcore.AsyncNetworkStream):
    """Delegates I/O; checks the pin after the handshake and again before each request is written.

    The second check matters for keep-alive: a connection opened for one provider (no pin, or
    another) may be reused for a request whose provider pins, and that request must not be sent.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream, der: bytes | None = None) -> None:
        self._inner = inner
        self._der = der  # the peer's leaf certificate, when this is a TLS stream
        self._accepted: tuple[str, ...] | None = None  # the pin set this connection last satisfied

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        hop = _HOP.get()
        if hop is not None and hop[0].pinned_spki and hop[0].pinned_spki != self._accepted:
            check_pin(self._der, hop[0], url=hop[1])
            self._accepted = hop[0].pinned_spki
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        hop = _HOP.get()
        if hop is not None and hop[0].pinned_spki:
            try:
                check_pin(der, hop[0], url=hop[1])
            except BaseException:
                await tls.aclose()
                raise
        return _GuardedStream(tls, der)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, judges and connects to one checked address."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        hop = _HOP.get()
        target = host
        if hop is not None and not hop[0].allow_private_networks:
            try:
                addresses = await resolve_checked(host, port, hop[0], url=hop[1])
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
            target = addresses[0]  # connect to what was checked: no second DNS answer
        stream = await self._inner.connect_tcp(target, port, timeout, local_address, socket_options)
        return _GuardedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by jwks-cache")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def ca_file_context(ca_file: str | os.PathLike[str], *, setting: str) -> ssl.SSLContext:
    """A verifying client context that trusts exactly the CA certificates of one PEM file.

    As ``curl --cacert`` does, the file replaces the default trust (certifi's bundle) rather than
    adding to it: a private IdP's CA is then the only thing its keys can be served under.

    Raises:
        ConfigError: the file cannot be read or holds no certificate; the message names ``setting``
            and the file, as an operator reads it in one line.
    """
    try:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"{setting}: {ca_file}: not a PEM file of CA certificates ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read CA file {ca_file}: {exc.strerror or exc}") from exc


def default_ssl_context() -> ssl.SSLContext:
    """The trust of the registry's own client: certifi's bundle, or what ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name.

    When either variable is set (non-empty), the context trusts what they name (both, when both
    are), in place of certifi's bundle: what OpenSSL does with them for Python's
    ``ssl.create_default_context()``, and what httpx does with ``trust_env``. Unset, the trust is
    certifi's, whatever the system's store holds. A variable naming nothing usable is a
    ConfigError rather than a silent fall back to another trust.
    """
    ca_file = os.environ.get("SSL_CERT_FILE") or None
    ca_dir = os.environ.get("SSL_CERT_DIR") or None
    if ca_file is None and ca_dir is None:
        return httpx.create_ssl_context(trust_env=False)
    if ca_dir is not None and not os.path.isdir(ca_dir):
        raise ConfigError(f"SSL_CERT_DIR: {ca_dir} is not a directory")
    if ca_file is None:
        return ssl.create_default_context(capath=ca_dir)
    context = ca_file_context(ca_file, setting="SSL_CERT_FILE")
    if ca_dir is not None:
        context.load_verify_locations(capath=ca_dir)
    return context


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guarded network backend underneath."""

    def __init__(self, *, verify: ssl.SSLContext | None = None, max_connections: int = 100) -> None:
        context = verify or default_ssl_context()
        # the context is handed over, or httpx would load a CA bundle of its own (~25 ms) for a
        # pool that is replaced below anyway
        super().__init__(verify=context, trust_env=False)
        self.ssl_context = context  # how it verifies (not what it trusts) goes into snapshots
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context,
            max_connections=max(100, max_connections),
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(),
        )


def guarded_client(*, verify: ssl.SSLContext | None = None, max_connections: int = 100) -> httpx.AsyncClient:
    """The client a Registry makes for itself when the caller brings none (``verify``: for test CAs).

    Its pool holds at least as many connections as the registry sends requests at once, so a
    request never waits inside httpcore's pool, where no timeout of ours runs.
    """
    transport = GuardedTransport(verify=verify, max_connections=max_connections)
    return httpx.AsyncClient(transport=transport, trust_env=False)
