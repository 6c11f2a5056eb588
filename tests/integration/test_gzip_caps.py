"""Encoded bodies against ``max_response_bytes``, on both backends: wire bytes, trailing data, truncation.

A scripted HTTP/1.1 server on 127.0.0.1 sends each body as chunked frames, so no Content-Length
refuses it early: every cap here must hold while the body streams. Each refusal leaves the keys
cached before it untouched.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from tests.helpers import PROVIDER, TENANT, loopback_registry

from jwks_cache import FetchError, ProviderConfig, Registry, ResponseTooLargeError
from jwks_cache.testing import KeyRing

# A refusal mid-body abandons httpx's response iterator, a chain of httpx and httpcore async generators
# that nothing closes (encode/httpx#3686); trio reports each one collected unexhausted, then closes it.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator 'http(core|x)\._.* was garbage collected:ResourceWarning"
)

CAP = 4096
MiB = 2**20
GARBAGE = 50 * MiB  # what the hostile server offers after the compressed stream
JWKS = json.dumps(KeyRing(count=2).public_jwks()).encode()
assert len(JWKS) < CAP


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


class ScriptedServer:
    """Answers every request with a chunked ``200`` whose body frames come from ``frames()``."""

    def __init__(self) -> None:
        self.encoding = "gzip"
        self.frames: Callable[[], Iterable[bytes]] = lambda: [_gzip(JWKS)]
        self.sent = 0  # body bytes handed to the socket for the last response
        self.finished = False  # the last response was sent to its end
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            try:
                await BufferedByteReceiveStream(stream).receive_until(b"\r\n\r\n", 65536)
                self.sent, self.finished = 0, False
                await stream.send(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Encoding: {self.encoding}\r\n".encode()
                    + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                for frame in self.frames():
                    await stream.send(b"%x\r\n" % len(frame) + frame + b"\r\n")
                    self.sent += len(frame)
                await stream.send(b"0\r\n\r\n")
                self.finished = True
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
                pass  # the client hung up on a body it refused


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[ScriptedServer, Registry]]:
    """A scripted server and a Registry with keys already cached from it (gzip, under the cap)."""
    server = ScriptedServer()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, server.handle)
        async with loopback_registry() as reg:
            await reg.register(
                ProviderConfig(
                    tenant=TENANT,
                    provider=PROVIDER,
                    jwks_url=server.url,
                    require_https=False,
                    max_response_bytes=CAP,
                )
            )
            await reg.refresh(TENANT, PROVIDER)
            yield server, reg
        tg.cancel_scope.cancel()


async def _cached(reg: Registry) -> list[str]:
    return [key.kid for key in (await reg.resolve(TENANT, PROVIDER)).keys]


def _zeros(total: int, first: bytes = b"") -> Iterator[bytes]:
    """``first`` followed by ``total`` zero bytes, 1 MiB a frame; the first frame carries both."""
    block = bytes(MiB)
    yield first + block[: min(total, MiB)]
    for sent in range(MiB, total, MiB):
        yield block[: min(total - sent, MiB)]


EXPECTED_KIDS = [key["kid"] for key in json.loads(JWKS)["keys"]]


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
@pytest.mark.parametrize("frame", [1, 7, 100_000], ids=["byte-frames", "small-frames", "one-frame"])
async def test_an_encoded_jwks_still_decodes(encoding: str, frame: int) -> None:
    with anyio.fail_after(20):
        async with serving() as (server, reg):
            encoded = _deflate(JWKS) if encoding == "deflate" else _gzip(JWKS)
            server.encoding = encoding
            server.frames = lambda: [encoded[at : at + frame] for at in range(0, len(encoded), frame)]
            await reg.refresh(TENANT, PROVIDER)
            assert server.finished
            assert await _cached(reg) == EXPECTED_KIDS


async def test_trailing_data_beyond_the_cap_is_refused_without_reading_it() -> None:
    with anyio.fail_after(20):
        async with serving() as (server, reg):
            server.frames = lambda: _zeros(GARBAGE, first=_gzip(JWKS))
            with pytest.raises(ResponseTooLargeError, match=f"{server.url}.*exceeds {CAP} bytes"):
                await reg.refresh(TENANT, PROVIDER)
            assert not server.finished
            assert server.sent < GARBAGE // 2  # the client hung up; kernel buffers hold a few MiB at most
            assert await _cached(reg) == EXPECTED_KIDS


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([_gzip(JWKS) + b"garbage"], id="same-frame"),
        pytest.param([_gzip(JWKS), b"garbage"], id="next-frame"),
        pytest.param([_gzip(JWKS), b"\x00"], id="one-zero-byte"),
        pytest.param([_gzip(JWKS), _gzip(b"")], id="second-gzip-member"),
    ],
)
async def test_small_trailing_data_after_the_compressed_stream_is_refused(frames: list[bytes]) -> None:
    with anyio.fail_after(20):
        async with serving() as (server, reg):
            server.frames = lambda: frames
            with pytest.raises(FetchError, match=f"{server.url}: corrupt gzip body: data after its end"):
                await reg.refresh(TENANT, PROVIDER)
            assert await _cached(reg) == EXPECTED_KIDS


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_endless_empty_deflate_blocks_are_refused_at_the_cap(encoding: str) -> None:
    # a header then empty non-final stored blocks (the Z_SYNC_FLUSH marker): wire bytes decoding to nothing
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    start = compressor.compress(b"") + compressor.flush(zlib.Z_SYNC_FLUSH)
    empty = b"\x00\x00\x00\xff\xff"
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
    assert not inflater.decompress(start + empty * 1000) and not inflater.eof and not inflater.unconsumed_tail
    per_frame = MiB // len(empty)

    def frames() -> Iterator[bytes]:
        yield start
        for _ in range(GARBAGE // (per_frame * len(empty))):
            yield empty * per_frame

    with anyio.fail_after(20):
        async with serving() as (server, reg):
            server.encoding = encoding
            server.frames = frames
            with pytest.raises(ResponseTooLargeError, match=f"{server.url}.*exceeds {CAP} bytes"):
                await reg.refresh(TENANT, PROVIDER)
            assert not server.finished
            assert server.sent < GARBAGE // 2
            assert await _cached(reg) == EXPECTED_KIDS


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("cut", [1, 4, 8, 100], ids=lambda cut: f"minus-{cut}")
async def test_a_truncated_compressed_body_is_refused(encoding: str, cut: int) -> None:
    encoded = _deflate(JWKS) if encoding == "deflate" else _gzip(JWKS)
    with anyio.fail_after(20):
        async with serving() as (server, reg):
            server.encoding = encoding
            server.frames = lambda: [encoded[:-cut]]
            with pytest.raises(FetchError, match=f"{server.url}: truncated {encoding} body"):
                await reg.refresh(TENANT, PROVIDER)
            assert server.finished
            assert await _cached(reg) == EXPECTED_KIDS


async def test_an_empty_gzip_body_is_refused_as_truncated() -> None:
    with anyio.fail_after(20):
        async with serving() as (server, reg):
            server.frames = tuple
            with pytest.raises(FetchError, match=f"{server.url}: truncated gzip body"):
                await reg.refresh(TENANT, PROVIDER)
            assert await _cached(reg) == EXPECTED_KIDS
