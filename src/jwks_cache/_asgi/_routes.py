"""The control plane's route table and handlers; each handler maps one registry call onto HTTP.

Each handler is followed by its OpenAPI operation (``*_operation``), and the route table binds the
two: a route cannot be added, or its answers changed, without its description in sight.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import msgspec

from .._errors import ConfigError, FetchError, NotRegisteredError, RegistryClosedError, SecurityError
from .._models import ProviderState, ServedJwks
from .._runtime._registry import Registry
from . import _operation_parts as oas
from ._fields import decode_registration, invalid_registration
from ._plumbing import JSON, HttpProblem, Request, Response, json_response, read_body

__all__ = ["ROUTES", "Access", "Context", "Endpoint", "Handler", "Health", "HealthFailure", "Operation", "Route"]

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
#: a route's OpenAPI operation object, given the app's body cap (``max_body_bytes``)
Operation = Callable[[int], dict[str, Any]]


class Endpoint(NamedTuple):
    """One method of a route: who may call it, what answers, and how the OpenAPI document describes it."""

    access: Access
    handler: Handler
    operation: Operation


@dataclass(frozen=True, slots=True)
class Route:
    template: str  # OpenAPI path template, also the match pattern
    methods: Mapping[str, Endpoint]

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


def _put_provider_operation(max_body_bytes: int) -> dict[str, Any]:
    return {
        "operationId": "putProvider",
        "summary": "Register a provider, or replace its registration",
        "description": "Performs no network I/O: the first fetch runs in the provider's refresh loop. Keys stay "
        "cached across a replacement that keeps the JWKS URL and issuer.",
        "parameters": oas.path_params(),
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": oas.ref("ProviderRegistration"), "example": oas.EXAMPLE_REGISTRATION}},
        },
        "responses": {
            "200": {
                **oas.json("Replaced; the new registration's status.", oas.ref("ProviderStatus")),
                "links": oas.links(*oas.AFTER_PUT),
            },
            "201": {
                **oas.json("Created; the new registration's status.", oas.ref("ProviderStatus")),
                "links": oas.links(*oas.AFTER_PUT),
            },
            "400": oas.problem("The body is not JSON, or Content-Length is malformed."),
            "413": oas.problem(f"The body exceeds {max_body_bytes} bytes."),
            "415": oas.problem("The body is not `application/json`."),
            "422": oas.problem("The registration is invalid; `errors` names each field.", schema="ValidationProblem"),
            "503": oas.problem(oas.CLOSED),
        },
    }


async def delete_provider(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    tenant, provider = _names(params)
    if not await ctx.registry.unregister(tenant, provider):
        raise NotRegisteredError(f"no provider registered as {tenant}/{provider}")
    return Response(204, headers=[("cache-control", "no-store")])


def _delete_provider_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "deleteProvider",
        "summary": "Unregister a provider: its refresh loop stops and its keys are dropped",
        "parameters": oas.path_params(),
        "responses": {
            "204": {"description": "Unregistered."},
            "404": oas.problem(oas.UNKNOWN),
            "503": oas.problem(oas.CLOSED),
        },
    }


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


def _get_jwks_operation(_: int) -> dict[str, Any]:
    validators = {"ETag": oas.ETAG, "Cache-Control": oas.CACHE_CONTROL}
    return {
        "operationId": "getJwks",
        "summary": "The provider's current public key set, exactly as the cache serves it",
        "description": "Waits for the first fetch of a cold provider (bounded by its retry deadline). Serves stale "
        "keys within `stale_while_error`; afterwards answers 503.",
        "parameters": [
            *oas.path_params(),
            {"name": "kid", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": oas.json("The public JWK Set (only the key `kid` when given).", oas.ref("JWKS"), headers=validators),
            "304": {"description": "Not modified (If-None-Match matched).", "headers": dict(validators)},
            "400": oas.problem("`kid` was given more than once."),
            "404": oas.problem(oas.UNKNOWN + " Or the set has no key with this `kid`."),
            "503": oas.problem(
                "No usable keys (the fetch failed, or the stale window is over; `Retry-After` is set), "
                "or the registry is closed.",
                headers={"Retry-After": oas.RETRY_AFTER},
            ),
        },
    }


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


def _post_refresh_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "refreshProvider",
        "summary": "Start a conditional refresh (or join the one in flight) without waiting for it",
        "parameters": oas.path_params(),
        "responses": {
            "202": {
                **oas.json(
                    "Started; the status as the refresh begins.",
                    oas.ref("ProviderStatus"),
                    headers={"Location": oas.LOCATION},
                ),
                "links": oas.links("getProviderStatus", "getJwks"),
            },
            "404": oas.problem(oas.UNKNOWN),
            "503": oas.problem(oas.CLOSED),
        },
    }


async def get_status(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return json_response(200, ctx.registry.status(*_names(params)))


def _get_status_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "getProviderStatus",
        "summary": "One provider's state, keys, schedule and counters",
        "parameters": oas.path_params(),
        "responses": {
            "200": oas.json("The status.", oas.ref("ProviderStatus")),
            "404": oas.problem(oas.UNKNOWN),
            "503": oas.problem(oas.CLOSED),
        },
    }


async def get_statuses(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return json_response(200, sorted(ctx.registry.statuses(), key=lambda s: (s.tenant, s.provider)))


def _get_statuses_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "listProviderStatuses",
        "summary": "Every provider's status, sorted by tenant and provider",
        "responses": {
            "200": oas.json("The statuses.", {"type": "array", "items": oas.ref("ProviderStatus")}),
            "503": oas.problem(oas.CLOSED),
        },
    }


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


def _get_health_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "getHealth",
        "summary": "Readiness: every provider has usable keys (ready, refreshing or stale)",
        "responses": {
            "200": oas.json("Healthy.", oas.ref("Health")),
            "503": oas.json("A provider has no usable keys, or the registry is closed.", oas.ref("Health")),
        },
    }


async def get_openapi(ctx: Context, request: Request, params: Mapping[str, str]) -> Response:
    return Response(200, ctx.openapi(request.root_path), content_type=JSON, headers=[("cache-control", "no-cache")])


def _get_openapi_operation(_: int) -> dict[str, Any]:
    return {
        "operationId": "getOpenApi",
        "summary": "This document",
        "responses": {"200": oas.json("The OpenAPI 3.1 document.", {"type": "object"})},
    }


_PROVIDER_PATH: Final = "/tenants/{tenant}/providers/{provider}"

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        _PROVIDER_PATH,
        {
            "PUT": Endpoint(Access.ADMIN, put_provider, _put_provider_operation),
            "DELETE": Endpoint(Access.ADMIN, delete_provider, _delete_provider_operation),
        },
    ),
    Route(_PROVIDER_PATH + "/jwks", {"GET": Endpoint(Access.READ, get_jwks, _get_jwks_operation)}),
    Route(_PROVIDER_PATH + "/refresh", {"POST": Endpoint(Access.ADMIN, post_refresh, _post_refresh_operation)}),
    Route(_PROVIDER_PATH + "/status", {"GET": Endpoint(Access.READ, get_status, _get_status_operation)}),
    Route("/status", {"GET": Endpoint(Access.READ, get_statuses, _get_statuses_operation)}),
    Route("/healthz", {"GET": Endpoint(Access.OPEN, get_health, _get_health_operation)}),
    Route("/openapi.json", {"GET": Endpoint(Access.OPEN, get_openapi, _get_openapi_operation)}),
)
