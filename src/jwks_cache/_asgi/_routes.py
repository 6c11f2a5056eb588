"""The control plane's route table and handlers; each handler maps one registry call onto HTTP."""

from __future__ import annotations

import base64
import enum
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from .._errors import ConfigError, FetchError, NotRegisteredError, RegistryClosedError, SecurityError
from .._models import ProviderState, ServedJwks
from .._runtime._registry import Registry
from ._fields import decode_registration, invalid_registration
from ._plumbing import JSON, HttpProblem, Request, Response, json_response, read_body

__all__ = ["ROUTES", "Access", "Context", "Handler", "Health", "HealthFailure", "Route"]

_USABLE: Final = frozenset({ProviderState.READY, ProviderState.REFRESHING, ProviderState.STALE})
_MAX_RETRY_AFTER_S: Final = 3600


class Access(enum.Enum):
    """Who may call a route: anyone, readers (token only with ``protect_reads``), or admins."""

    OPEN = "open"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler may use: the running registry and the app's settings."""

    registry: Registry
    protect_reads: bool
    max_body_bytes: int
    openapi: Callable[[str], bytes]  # root_path -> the encoded document
    registration_defaults: dict[str, object]  # what a PUT body leaves out, as the serve file's tables


Handler = Callable[[Context, Request, Mapping[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    template: str  # OpenAPI path template, also the match pattern
    methods: Mapping[str, tuple[Access, Handler]]

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.split("/"))

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.split("/")
        pattern = self.segments
        if len(parts) != len(pattern):
            return None
        params: dict[str, str] = {}
        for part, want in zip(parts, pattern, strict=True):
            if want.startswith("{"):
                if not part:
                    return None
                params[want[1:-1]] = part
            elif part != want:
                return None
        return params


class HealthFailure(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    provider: str
    state: ProviderState
    last_error: str | None


class Health(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Readiness: ``pass`` when every provider has usable keys (ready, refreshing or stale).

    When reads are protected and the caller shows no token, only ``status`` is sent: an open probe
    endpoint tells neither tenant names, URLs and errors, nor how many tenants there are. ``store``
    (omitted without a snapshot store) says ``degraded`` while the store's calls fail; it does not
    fail the check, as the registry keeps serving and fetching without its store.
    """

    status: Literal["pass", "fail"]
    providers: int | None = None
    failing: int | None = None
    failures: list[HealthFailure] | None = None
    detail: str | None = None
    store: Literal["ok", "degraded"] | None = None


def _names(params: Mapping[str, str]) -> tuple[str, str]:
    return params["tenant"], params["provider"]


def _status_url(request: Request, tenant: str, provider: str) -> str:
    return f"{request.root_path}/tenants/{tenant}/providers/{provider}/status"


async def put_provider(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    tenant, provider = _names(params)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON and not media_type.endswith("+json"):
        raise HttpProblem(415, "the registration must be sent as application/json")
    body = await read_body(request, ctx.max_body_bytes)
    config = decode_registration(body, tenant, provider, ctx.registration_defaults)
    existed = ctx.registry.is_registered(tenant, provider)
    try:
        await ctx.registry.register(config)
    except ConfigError as exc:  # a registry floor (https, allowed domains, private networks)
        raise invalid_registration(exc) from exc
    return json_response(200 if existed else 201, ctx.registry.status(tenant, provider))


async def delete_provider(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    tenant, provider = _names(params)
    if not await ctx.registry.unregister(tenant, provider):
        raise NotRegisteredError(f"no provider registered as {tenant}/{provider}")
    return Response(204, headers=[("cache-control", "no-store")])


async def get_jwks(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    tenant, provider = _names(params)
    kids = request.query.get("kid", [])
    if len(kids) > 1:
        raise HttpProblem(400, "kid may be given at most once")
    try:
        served = await ctx.registry.served_jwks(tenant, provider)  # as resolve() serves it, stale window and all
    except (FetchError, SecurityError) as exc:
        retry_after = _retry_after(ctx, tenant, provider, exc)
        raise HttpProblem(
            503,
            f"{tenant}/{provider} has no usable keys: {exc}",
            kind="keys-unavailable",
            headers=[("retry-after", str(retry_after))],
        ) from exc
    document = served.jwks
    if kids:
        document["keys"] = [key for key in document["keys"] if key.get("kid") == kids[0]]
        if not document["keys"]:
            raise HttpProblem(404, f"{tenant}/{provider} serves no key with kid {kids[0]!r}", kind="kid-not-found")
    body = msgspec.json.encode(document)
    etag = '"' + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode("ascii") + '"'
    headers = [("etag", etag), ("cache-control", _cache_control(ctx, served))]
    if _none_match(request.headers.get("if-none-match"), etag):
        return Response(304, headers=headers)
    return Response(200, body, content_type=JSON, headers=headers)


def _cache_control(ctx: Context, served: ServedJwks) -> str:
    """Downstream caches may keep the set only as long as we consider it fresh ourselves."""
    visibility = "private" if ctx.protect_reads else "public"
    remaining = math.floor(served.fresh_for)
    if remaining <= 0:  # served from the stale window: revalidate every time
        return f"{visibility}, no-cache"
    return f"{visibility}, max-age={remaining}"


def _retry_after(ctx: Context, tenant: str, provider: str, exc: Exception) -> int:
    """Seconds until the provider's loop tries again (or the IdP's own Retry-After), 1..3600."""
    try:
        wait = ctx.registry.seconds_until_refresh(tenant, provider)
    except (NotRegisteredError, RegistryClosedError):  # gone while we waited: nothing will retry it
        wait = 0.0
    if isinstance(exc, FetchError) and exc.retry_after is not None:
        wait = max(wait, exc.retry_after)
    if not math.isfinite(wait) or wait < 1:
        return 1
    return min(math.ceil(wait), _MAX_RETRY_AFTER_S)


def _none_match(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison, ``*`` matches any current representation."""
    if header is None:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


async def post_refresh(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    tenant, provider = _names(params)
    # Start (or join) the single-flight fetch in the registry's task group and answer at once:
    # an admin request should not hold a connection for a whole retry deadline.
    ctx.registry.request_refresh(tenant, provider)
    return json_response(
        202, ctx.registry.status(tenant, provider), headers=[("location", _status_url(request, tenant, provider))]
    )


async def get_status(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return json_response(200, ctx.registry.status(*_names(params)))


async def get_statuses(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return json_response(200, sorted(ctx.registry.statuses(), key=lambda s: (s.tenant, s.provider)))


async def get_health(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    show = request.authenticated or not ctx.protect_reads
    try:
        statuses = sorted(ctx.registry.statuses(), key=lambda s: (s.tenant, s.provider))
        store = ctx.registry.store_status()
    except RegistryClosedError as exc:  # probes read one shape: closed is unhealthy, not a problem
        closed = Health(status="fail", providers=0, failing=0, detail=str(exc))
        return json_response(503, closed if show else Health(status="fail"))
    failing = [s for s in statuses if s.state not in _USABLE]
    status: Literal["pass", "fail"] = "fail" if failing else "pass"
    if not show:
        return json_response(503 if failing else 200, Health(status=status))
    failures = [
        HealthFailure(tenant=s.tenant, provider=s.provider, state=s.state, last_error=s.last_error) for s in failing
    ]
    health = Health(
        status=status,
        providers=len(statuses),
        failing=len(failing),
        failures=failures,
        store=None if store is None else "degraded" if store.degraded else "ok",
    )
    return json_response(503 if failing else 200, health)


async def get_openapi(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return Response(200, ctx.openapi(request.root_path), content_type=JSON, headers=[("cache-control", "no-cache")])


_PROVIDER_PATH: Final = "/tenants/{tenant}/providers/{provider}"

ROUTES: Final[tuple[Route, ...]] = (
    Route(_PROVIDER_PATH, {"PUT": (Access.ADMIN, put_provider), "DELETE": (Access.ADMIN, delete_provider)}),
    Route(_PROVIDER_PATH + "/jwks", {"GET": (Access.READ, get_jwks)}),
    Route(_PROVIDER_PATH + "/refresh", {"POST": (Access.ADMIN, post_refresh)}),
    Route(_PROVIDER_PATH + "/status", {"GET": (Access.READ, get_status)}),
    Route("/status", {"GET": (Access.READ, get_statuses)}),
    Route("/healthz", {"GET": (Access.OPEN, get_health)}),
    Route("/openapi.json", {"GET": (Access.OPEN, get_openapi)}),
)
