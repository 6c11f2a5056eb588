"""One HTTP attempt under the transport policy: the sole httpx boundary.

Redirects are followed here, hop by hop, because httpx's own redirect handling cannot re-check the
scheme, the domain allowlist and the resolved address before each request. The body is read raw and
decoded with a bounded decompressor: httpx's decoders inflate a whole chunk at once, so a 64 KiB gzip
chunk could become 64 MiB before any cap applies.
"""

from __future__ import annotations

import contextlib
import ipaddress
import zlib
from collections.abc import Callable
from typing import Final, NamedTuple

import anyio
import httpx
import msgspec

from .._clock import Clock, fail_at
from .._errors import FetchError, ResponseTooLargeError, SecurityError
from .._telemetry import Telemetry
from ._cadence import retry_after_delay
from ._policy import HopPolicy, check_address, check_content_type, check_pin, check_url, resolve_redirect
from ._transport import GuardedTransport, hop_policy, resolve_checked

__all__ = ["FetchResult", "FetchSlots", "Fetcher", "Headers"]

Headers = tuple[tuple[str, str], ...]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_USER_AGENT: Final = "jwks-cache"
#: upstream requests a Registry sends at once (``Registry(max_concurrent_fetches=...)``), and its ceiling
DEFAULT_CONCURRENT_FETCHES: Final = 32
MAX_CONCURRENT_FETCHES: Final = 1024


class FetchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one successful attempt produced: a 200 body or a 304."""

    status: int
    url: str
    body: bytes | None
    headers: Headers
    received_at: float  # wall clock, for HTTP date arithmetic


def transport_rules(transport: GuardedTransport) -> str:
    """The guarded transport and how it verifies TLS (certificates required, hostnames checked).

    Not the trust anchors themselves: a context loads a CA directory lazily, so its certificate
    list changes with use and would make every restart look like a change of rules.
    """
    context = transport.ssl_context
    return f"guarded {int(context.verify_mode)} {int(context.check_hostname)}"


class FetchSlots(NamedTuple):
    """The request slots of a Fetcher and how many are taken, read for ``Registry.runtime_stats``."""

    total: int
    background: int
    taken: int
    background_taken: int


class Fetcher:
    """Performs single GET attempts for every provider of one Registry."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        clock: Clock,
        *,
        telemetry: Telemetry | None = None,
        max_concurrency: int = DEFAULT_CONCURRENT_FETCHES,
    ) -> None:
        self._client = client
        # thousands of providers registered at once must not open thousands of requests at once:
        # httpcore's pool scans every queued request per response (quadratic), and IdPs rate-limit
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        # background refreshes (the scheduler's) take half of those at most, so a caller's cold
        # lookup finds a free slot however many refreshes are due or slow
        self._background = anyio.CapacityLimiter(max(1, max_concurrency // 2))  # = the scheduler's flights
        # our own transport judges addresses and pins before sending; a caller's client gets the
        # DNS pre-check here and the post-response checks only
        transport = getattr(client, "_transport", None)
        self._guarded = isinstance(transport, GuardedTransport)
        #: what snapshots record of this transport (see Refresher.rules): keys fetched through a
        #: caller's client, or with other TLS verification, are not restored by this one
        self.transport_rules = transport_rules(transport) if isinstance(transport, GuardedTransport) else "caller"
        self._clock = clock
        self.telemetry = telemetry or Telemetry()  # the Registry passes its own; refreshers share it
        self.in_flight = 0  # read by VirtualClock.settle so tests never jump time mid-request

    def busy(self) -> bool:
        return self.in_flight > 0

    def slots(self) -> FetchSlots:
        """A copy of the limiters' counts: the limiters themselves stay private, as they can be resized."""
        limiter, background = self._limiter, self._background
        return FetchSlots(
            total=int(limiter.total_tokens),
            background=int(background.total_tokens),
            taken=limiter.borrowed_tokens,
            background_taken=background.borrowed_tokens,
        )

    async def get(
        self,
        url: str,
        *,
        policy: HopPolicy,
        max_redirects: int,
        max_bytes: int,
        attempt_timeout: float,
        headers: dict[str, str] | None = None,
        background: bool = False,
    ) -> FetchResult:
        """One attempt: every hop checked, the whole attempt under one timeout (not the queueing)."""
        async with self._background if background else contextlib.nullcontext(), self._limiter:
            return await self._attempt(url, policy, max_redirects, max_bytes, attempt_timeout, headers)

    async def _attempt(
        self,
        url: str,
        policy: HopPolicy,
        max_redirects: int,
        max_bytes: int,
        attempt_timeout: float,
        headers: dict[str, str] | None,
    ) -> FetchResult:
        self.in_flight += 1
        try:
            # the span sees fail_at's TimeoutError, so its error.type says "timeout"
            with (
                self.telemetry.fetch_span(url) as span,
                fail_at(self._clock, self._clock.monotonic() + attempt_timeout),
            ):
                result = await self._follow(url, policy, max_redirects, max_bytes, attempt_timeout, headers or {})
                span.status_code = result.status
                return result
        except TimeoutError:
            raise FetchError(f"GET {url}: timed out after {attempt_timeout:g}s", url=url, transient=True) from None
        finally:
            self.in_flight -= 1

    async def _follow(
        self,
        url: str,
        policy: HopPolicy,
        max_redirects: int,
        max_bytes: int,
        request_timeout: float,
        extra: dict[str, str],
    ) -> FetchResult:
        for _hop in range(max_redirects + 1):
            host = check_url(url, policy)
            if not policy.allow_private_networks and not self._guarded:
                await _check_resolved(host, url, policy)
            try:
                request = self._client.build_request(
                    "GET",
                    url,
                    headers={
                        "Accept": "application/jwk-set+json, application/json",
                        "Accept-Encoding": "gzip, identity",
                        "User-Agent": _USER_AGENT,
                        **extra,
                    },
                    timeout=httpx.Timeout(request_timeout),
                )
            except (httpx.InvalidURL, ValueError) as exc:  # e.g. an IDNA label httpx refuses
                raise SecurityError(f"refused {url!r}: not a URL httpx can send ({exc})", url=url) from exc
            try:
                with hop_policy(policy, url):
                    response = await self._client.send(request, stream=True, follow_redirects=False)
            except (httpx.HTTPError, httpx.StreamError) as exc:
                raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}", url=url, transient=True) from exc
            except (httpx.InvalidURL, ValueError) as exc:  # host encoding refused while connecting
                raise SecurityError(f"refused {url!r}: not a URL httpx can send ({exc})", url=url) from exc
            try:
                _check_connection(response, url, policy)
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"GET {url}: redirect without Location", url=url, status=response.status_code)
                    url = resolve_redirect(url, location)
                    continue
                return await self._finish(response, url, max_bytes)
            finally:
                await response.aclose()
        raise SecurityError(f"GET {url}: more than {max_redirects} redirects", url=url)

    async def _finish(self, response: httpx.Response, url: str, max_bytes: int) -> FetchResult:
        status = response.status_code
        headers = tuple(response.headers.multi_items())
        received_at = self._clock.time()
        if status == 304:
            # read the (empty) rest of the response, capped like any body: one left unread makes
            # httpcore close the connection, and every revalidation would pay a new TCP+TLS setup
            await _read_capped(response, url, max_bytes)
            return FetchResult(status=304, url=url, body=None, headers=headers, received_at=received_at)
        if status != 200:
            retry_after = retry_after_delay(response.headers.get("retry-after"), now=received_at)
            raise FetchError(
                f"GET {url}: HTTP {status}",
                url=url,
                status=status,
                transient=status in _TRANSIENT_STATUS or status >= 500,
                retry_after=retry_after,
            )
        check_content_type(response.headers.get("content-type"), url=url)
        body = await _read_capped(response, url, max_bytes)
        return FetchResult(status=200, url=url, body=body, headers=headers, received_at=received_at)


async def _check_resolved(host: str, url: str, policy: HopPolicy) -> None:
    """Refuse hosts whose DNS answers include a non-public address (SSRF), before connecting."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return  # an IP literal was already judged by check_url
    try:
        await resolve_checked(host, 443, policy, url=url)
    except OSError as exc:
        raise FetchError(f"GET {url}: cannot resolve {host}: {exc}", url=url, transient=True) from exc


def _check_connection(response: httpx.Response, url: str, policy: HopPolicy) -> None:
    """Judge the connection actually used: its peer address (DNS rebinding) and its certificate pin."""
    stream = response.extensions.get("network_stream")
    get_extra: Callable[[str], object] | None = getattr(stream, "get_extra_info", None)
    if get_extra is None:
        if policy.pinned_spki:
            raise SecurityError(f"GET {url}: cannot inspect the TLS connection to check pinned_spki", url=url)
        return
    peer = get_extra("server_addr")
    if not policy.allow_private_networks and isinstance(peer, tuple) and peer:
        check_address(str(peer[0]), policy, url=url)
    if policy.pinned_spki:
        ssl_object = get_extra("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None  # type: ignore[attr-defined]
        check_pin(der, policy, url=url)


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    """Read the body, decoding gzip/deflate with a bounded inflater, refusing anything over ``max_bytes``.

    The cap applies to the bytes received as well as to the decoded ones: a compressed JWKS is never
    larger than the decoded cap, and otherwise a stream of empty deflate blocks, or bytes after the
    end of the compressed stream (which zlib would keep in ``unused_data``), would be read without
    limit. An encoded body must end exactly where its compressed stream ends (trailer included).
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLargeError(f"GET {url}: Content-Length {declared} exceeds {max_bytes} bytes", url=url)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflater = _inflater(encoding, url)
    body = bytearray()
    received = 0
    try:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if inflater is None:
                body += chunk
                if len(body) > max_bytes:
                    raise ResponseTooLargeError(f"GET {url}: body exceeds {max_bytes} bytes", url=url)
                continue
            if received > max_bytes:
                raise ResponseTooLargeError(
                    f"GET {url}: {encoding} body exceeds {max_bytes} bytes before decoding", url=url
                )
            data = chunk
            while data:
                # past the stream's end zlib moves the input to unused_data, refused below;
                # max_length >= 1 here, so a non-empty unconsumed_tail means output was produced
                out = inflater.decompress(data, max_bytes + 1 - len(body))
                data = inflater.unconsumed_tail
                body += out
                if len(body) > max_bytes:
                    raise ResponseTooLargeError(f"GET {url}: body exceeds {max_bytes} bytes", url=url)
            if inflater.unused_data:
                raise FetchError(f"GET {url}: corrupt {encoding} body: data after its end", url=url)
    except zlib.error as exc:
        raise FetchError(f"GET {url}: corrupt {encoding} body: {exc}", url=url) from exc
    except (httpx.HTTPError, httpx.StreamError) as exc:  # StreamError is a RuntimeError, not an HTTPError
        raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}", url=url, transient=True) from exc
    if inflater is not None and not inflater.eof:
        raise FetchError(f"GET {url}: truncated {encoding} body: it ends inside its compressed stream", url=url)
    return bytes(body)


def _inflater(encoding: str, url: str) -> zlib._Decompress | None:
    if encoding in ("identity", ""):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise FetchError(f"GET {url}: unsupported Content-Encoding {encoding!r}", url=url)
