"""Raw ASGI 3 plumbing for the control plane: requests, bounded bodies, responses, RFC 9457 problems.

Hand-written over the ASGI dicts rather than taken from a framework, for the reasons in ``_app``.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec

__all__ = [
    "JSON",
    "PROBLEM_JSON",
    "ClientGone",
    "FieldError",
    "HttpProblem",
    "Problem",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "ValidationProblem",
    "json_response",
    "problem_type",
    "read_body",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
_TYPE_PREFIX: Final = "tag:jwks-cache,2026:problem:"
_MAX_CONTENT_LENGTH_DIGITS: Final = 18


def problem_type(name: str) -> str:
    """The stable ``type`` URI of one problem kind (RFC 9457 §3.1.1 allows non-resolvable tag URIs)."""
    return _TYPE_PREFIX + name


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One invalid member of a request body; ``pointer`` is a JSON Pointer fragment (RFC 9457 §3)."""

    detail: str
    pointer: str
    field: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An RFC 9457 problem details object, served as ``application/problem+json``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ValidationProblem(Problem, frozen=True, kw_only=True):
    """A refused registration: ``errors`` lists the fields at fault."""

    errors: list[FieldError]


class HttpProblem(Exception):
    """Private signal: stop handling and answer with this problem; never leaves the app."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = tuple(headers)
        self.errors = errors

    def response(self) -> Response:
        title = http.HTTPStatus(self.status).phrase
        type_ = problem_type(self.kind) if self.kind is not None else "about:blank"
        body: Problem
        if self.errors is not None:
            body = ValidationProblem(
                type=type_, title=title, status=self.status, detail=self.detail, errors=list(self.errors)
            )
        else:
            body = Problem(type=type_, title=title, status=self.status, detail=self.detail)
        return Response(
            self.status,
            msgspec.json.encode(body),
            content_type=PROBLEM_JSON,
            headers=[("cache-control", "no-store"), *self.headers],
        )


class ClientGone(Exception):
    """Private signal: the client disconnected before its request body arrived."""


@dataclass(slots=True)
class Request:
    """The parts of an ASGI HTTP scope the routes read; header names are lowercase."""

    method: str
    path: str
    root_path: str
    headers: Mapping[str, str]
    query: Mapping[str, list[str]]
    receive: Receive
    authenticated: bool = False

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        root_path = str(scope.get("root_path", ""))
        path = str(scope.get("path", "/"))
        # Starlette and the ASGI spec keep the mount prefix in ``path``; other hosts strip it.
        if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("", "/"):
            path = path[len(root_path) :] or "/"
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = bytes(raw_name).decode("latin-1").lower()
            value = bytes(raw_value).decode("latin-1")
            # RFC 9110 §5.3: repeated fields combine with commas (a doubled Authorization then fails)
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True)
        return cls(str(scope.get("method", "GET")).upper(), path, root_path, headers, query, receive)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, payload: Any, *, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """Dynamic state: never cached by intermediaries unless a route says otherwise."""
    return Response(
        status, msgspec.json.encode(payload), content_type=JSON, headers=[("cache-control", "no-store"), *headers]
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything, so an
    oversized upload costs one header parse.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        text = declared.strip()
        if not (text.isdigit() and text.isascii() and len(text) <= _MAX_CONTENT_LENGTH_DIGITS):
            raise HttpProblem(400, "Content-Length must be a decimal byte count")
        if int(text) > limit:
            raise HttpProblem(413, f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if message["type"] != "http.request":
            continue
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
    """Send ``response``; for a HEAD request, its headers (Content-Length included) and no body."""
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type.encode("latin-1")))
        headers.append((b"x-content-type-options", b"nosniff"))
    has_body = response.status not in (204, 304)
    if has_body:
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body if has_body and not head else b""})
