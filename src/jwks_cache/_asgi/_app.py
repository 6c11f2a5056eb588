"""The control-plane ASGI app over a running Registry: register, inspect, refresh, serve the public keys.

Why a raw ASGI 3 callable and no framework: the app has eight operations and one request body type. Starlette
is anyio-based and would run on trio, but it would be a new runtime dependency (and a version
constraint imposed on every user who mounts us in their own Starlette/FastAPI); Litestar and Quart
are larger still, and Quart runs on asyncio only. A hand-written router over ``scope["path"]``
with msgspec for JSON adds nothing beyond what the core already imports, never touches the event
loop (it awaits only ``receive``/``send`` and the registry), and therefore runs unchanged under
hypercorn's asyncio and trio workers, uvicorn, or mounted inside Starlette, Litestar or Quart
(``root_path`` is honoured).

The app starts no tasks: refreshes it triggers run in the registry's task group, so its lifetime is
the registry's ``async with`` block, and the host server's lifespan events are simply acknowledged.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from .._errors import ConfigError, NotRegisteredError, RegistryClosedError
from .._runtime._registry import Registry
from ._fields import registration_defaults
from ._openapi import openapi_document
from ._plumbing import ClientGone, HttpProblem, Receive, Request, Response, Scope, Send, send_response
from ._routes import ROUTES, Access, Context, Handler

__all__ = ["ASGIApp", "create_app"]

#: ASGI 3 has no one typing standard: hypercorn's and asgiref's scopes are TypedDicts, Starlette's
#: a MutableMapping, and neither is assignable to the other, so the public type accepts any of them.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

#: RFC 6750 §2.1 b64token, long enough that guessing is not an option.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]{16,4096}=*")
_REALM: Final = 'Bearer realm="jwks-cache"'
_MAX_OPENAPI_VARIANTS: Final = 16


def create_app(
    registry: Registry,
    *,
    admin_token: str | None = None,
    protect_reads: bool = True,
    max_body_bytes: int = 64 * 1024,
) -> ASGIApp:
    """The control-plane ASGI 3 app over a running Registry.

    The app holds no state of its own and starts no tasks; serve it only while the registry is
    open (inside its ``async with``), e.g. from the same task group as the ASGI server.

    Args:
        registry: an open Registry; routes answer 503 once it is closed.
        admin_token: the bearer token of mutating routes (PUT/DELETE registrations, refresh) and,
            with ``protect_reads``, of reads. Without one mutating routes answer 403.
        protect_reads: require the token on read routes too (the default): status lists every
            tenant, URL and error. ``/healthz`` and ``/openapi.json`` stay open; without the token
            the health report says only ``pass`` or ``fail``. ``False`` serves reads to anyone,
            and is needed to serve them without an ``admin_token``.
        max_body_bytes: request bodies larger than this are refused with 413 before being read.

    Returns:
        An ASGI 3 callable handling ``http`` and ``lifespan`` scopes.

    Raises:
        ConfigError: the token is shorter than 16 characters or not an RFC 6750 b64token,
            reads are protected (the default) without a token, or ``max_body_bytes`` is not positive.
    """
    if admin_token is not None and _TOKEN_RE.fullmatch(admin_token) is None:
        raise ConfigError(
            "admin_token must be 16-4096 characters of [A-Za-z0-9-._~+/] (RFC 6750), e.g. secrets.token_urlsafe(32)"
        )
    if protect_reads and admin_token is None:
        raise ConfigError(
            "protect_reads (the default) needs admin_token: no caller could ever read; "
            "give admin_token, or protect_reads=False to serve reads to anyone"
        )
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes must be a positive int (got {max_body_bytes!r})")
    return _ControlPlane(registry, admin_token, protect_reads, max_body_bytes)


class _ControlPlane:
    """The ASGI callable; one per ``create_app`` call, safe to share across connections."""

    def __init__(self, registry: Registry, admin_token: str | None, protect_reads: bool, max_body_bytes: int) -> None:
        self._token = admin_token.encode("ascii") if admin_token is not None else None
        self._protect_reads = protect_reads
        # a PUT body means what a [[providers]] table of the serve file means under this registry
        defaults = registration_defaults(require_https=registry.require_https)
        self._document = openapi_document(
            admin_enabled=admin_token is not None,
            protect_reads=protect_reads,
            max_body_bytes=max_body_bytes,
            registration_defaults=defaults,
        )
        self._encoded: dict[str, bytes] = {}
        self._ctx = Context(registry, protect_reads, max_body_bytes, self._openapi, defaults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http":
            request = Request.from_scope(scope, receive)
            try:
                response = await self._dispatch(request)
            except ClientGone:
                return
            await send_response(send, response, head=request.method == "HEAD")
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket" and (await receive()).get("type") == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403

    async def _dispatch(self, request: Request) -> Response:
        try:
            access, handler, params = _resolve(request)
            request.authenticated = self._authorize(request, access)
            return await handler(self._ctx, request, params)
        except HttpProblem as problem:
            return problem.response()
        except NotRegisteredError as exc:
            return HttpProblem(404, str(exc), kind="not-registered").response()
        except RegistryClosedError as exc:
            return HttpProblem(503, str(exc), kind="registry-closed").response()

    def _authorize(self, request: Request, access: Access) -> bool:
        """Whether a valid token was shown; raises 401/403 when the route needs one and it is not."""
        shown = self._token_shown(request.headers.get("authorization"))
        if access is Access.OPEN or (access is Access.READ and not self._protect_reads):
            return shown is True
        if self._token is None:
            raise HttpProblem(403, "mutating routes are disabled: the control plane has no admin token")
        if shown is None:
            raise HttpProblem(401, "a bearer token is required", headers=[("www-authenticate", _REALM)])
        if not shown:
            challenge = f'{_REALM}, error="invalid_token"'
            raise HttpProblem(401, "the bearer token is not valid", headers=[("www-authenticate", challenge)])
        return True

    def _token_shown(self, header: str | None) -> bool | None:
        """None without credentials, else whether they are the admin token (constant-time compare)."""
        if header is None:
            return None
        scheme, _, credentials = header.strip().partition(" ")
        if self._token is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("latin-1"), self._token)

    def _openapi(self, root_path: str) -> bytes:
        encoded = self._encoded.get(root_path)
        if encoded is None:
            document = dict(self._document)
            if root_path:  # mounted under a prefix: clients must prepend it to every path
                document["servers"] = [{"url": root_path}]
            encoded = msgspec.json.encode(document)
            if len(self._encoded) < _MAX_OPENAPI_VARIANTS:
                self._encoded[root_path] = encoded
        return encoded


def _resolve(request: Request) -> tuple[Access, Handler, dict[str, str]]:
    """The route's access level, handler and path parameters; 404 or 405 (with Allow) otherwise."""
    for route in ROUTES:
        params = route.match(request.path)
        if params is None:
            continue
        # RFC 9110 §9.3.2: HEAD is GET without the body (load balancers' health checks use it)
        entry = route.methods.get("GET" if request.method == "HEAD" else request.method)
        if entry is None:
            allow = ", ".join(sorted([*route.methods, "HEAD"] if "GET" in route.methods else route.methods))
            raise HttpProblem(405, f"{request.method} is not allowed here", headers=[("allow", allow)])
        return entry[0], entry[1], params
    raise HttpProblem(404, f"no route for {request.path!r}")


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: the registry's owner, not the app, runs the lifecycle."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
