"""Bearer-token authentication for Starlette (and FastAPI, whose app is a Starlette app).

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from jwks_cache.starlette import BearerBackend, lifespan, on_auth_error

    app = Starlette(
        routes=[...],
        lifespan=lifespan([ProviderConfig(tenant="acme", provider="okta", issuer=...)]),
        middleware=[
            Middleware(AuthenticationMiddleware, backend=BearerBackend(tenant="acme", provider="okta"),
                       on_error=on_auth_error),
        ],
    )

:func:`lifespan` opens one Registry for the app's life (pre-warmed: the app serves once its
providers have keys, ``warm_timeout`` at most) and leaves it in the lifespan state, where
:class:`BearerBackend` and ``jwks_cache.fastapi.BearerToken`` find it. The backend sets
``request.user`` (a :class:`TokenUser` holding the claims) and ``request.auth`` (the token's
scopes, for Starlette's ``@requires``); :func:`on_auth_error` answers RFC 6750. Needs the
``starlette`` extra.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from jwks_cache import ProviderConfig, Registry, scopes_of
from jwks_cache.bearer import (
    STATE_KEY,
    Refused,
    Selector,
    header,
    open_registry,
    path_param,
    select,
    verify_authorization,
)

__all__ = [
    "STATE_KEY",
    "BearerAuthenticationError",
    "BearerBackend",
    "TokenUser",
    "header",
    "lifespan",
    "on_auth_error",
    "open_registry",
    "path_param",
    "registry_of",
    "verify_request",
]


def lifespan(
    providers: Iterable[ProviderConfig] = (),
    *,
    config_file: str | os.PathLike[str] | None = None,
    registry: Callable[[], Registry] | None = None,
    warm_timeout: float | None = 10.0,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A ``lifespan=`` for Starlette or FastAPI holding one pre-warmed Registry (see :func:`open_registry`).

    The Registry is in the lifespan state under :data:`STATE_KEY` (``request.state.jwks_registry``).
    To combine it with a lifespan of your own, enter :func:`open_registry` there and yield
    ``{STATE_KEY: registry}`` (or set ``app.state.jwks_registry``).
    """
    configs = tuple(providers)

    @asynccontextmanager
    async def registry_lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        async with open_registry(configs, config_file=config_file, registry=registry, warm_timeout=warm_timeout) as reg:
            yield {STATE_KEY: reg}

    return registry_lifespan


def registry_of(connection: HTTPConnection) -> Registry | None:
    """The open Registry of this app: in the lifespan state, else on ``app.state``; None outside the lifespan."""
    found = connection.scope.get("state", {}).get(STATE_KEY)
    if found is None:
        found = getattr(connection.app.state, STATE_KEY, None)
    return found if isinstance(found, Registry) else None


async def verify_request(
    connection: HTTPConnection,
    *,
    tenant: Selector,
    provider: Selector,
    audience: str | Sequence[str] | None = None,
    issuer: str | Sequence[str] | None = None,
    leeway: float = 0.0,
    require_claims: Sequence[str] = (),
) -> dict[str, Any]:
    """The verified claims of the connection's bearer token.

    Raises:
        BearerAuthenticationError: the RFC 6750 answer (its ``status`` and ``headers``).
    """
    try:
        return await verify_authorization(
            registry_of(connection),
            connection.headers.get("authorization"),
            tenant=select(tenant, connection),
            provider=select(provider, connection),
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            require_claims=require_claims,
        )
    except Refused as refused:
        raise BearerAuthenticationError(refused.status, refused.detail, refused.headers) from refused.__cause__


class TokenUser(BaseUser):
    """``request.user``: authenticated, named by ``sub``, with every verified claim in ``claims``."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return str(self.claims.get("sub", ""))

    @property
    def identity(self) -> str:
        return str(self.claims.get("sub", ""))


class BearerAuthenticationError(AuthenticationError):
    """A refused token, with the RFC 6750 answer :func:`on_auth_error` sends."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers)


class BearerBackend(AuthenticationBackend):
    """Verifies ``Authorization: Bearer`` for Starlette's ``AuthenticationMiddleware``.

    Args:
        tenant, provider: whose keys verify the token: a name, or a selector of the connection
            (:func:`header`; :func:`path_param` only under a route's own middleware, as app-wide
            middleware runs before routing).
        audience, issuer: replace the registration's (see :meth:`Registry.verify`).
        require_claims: claims every token must carry (besides the registration's).
        leeway: seconds of clock skew tolerated.
        optional: without an ``Authorization`` header the request goes on anonymous (for routes
            guarded by ``@requires``) instead of a 401.

    ``request.auth.scopes`` holds the token's scopes (:func:`jwks_cache.scopes_of`), so
    ``@requires("orders:read")`` works; it answers Starlette's plain 403, where FastAPI's
    ``Security(..., scopes=[...])`` answers RFC 6750's ``insufficient_scope``.
    """

    def __init__(
        self,
        *,
        tenant: Selector,
        provider: Selector,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] = (),
        leeway: float = 0.0,
        optional: bool = False,
    ) -> None:
        self.tenant = tenant
        self.provider = provider
        self.audience = audience
        self.issuer = issuer
        self.require_claims = tuple(require_claims)
        self.leeway = leeway
        self.optional = optional

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if self.optional and "authorization" not in conn.headers:
            return None
        claims = await verify_request(
            conn,
            tenant=self.tenant,
            provider=self.provider,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            require_claims=self.require_claims,
        )
        return AuthCredentials(sorted(scopes_of(claims))), TokenUser(claims)


def on_auth_error(_conn: HTTPConnection, exc: Exception) -> Response:
    """The ``on_error`` of ``AuthenticationMiddleware``: RFC 6750's status and ``WWW-Authenticate``."""
    if isinstance(exc, BearerAuthenticationError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
    return JSONResponse({"detail": str(exc)}, status_code=400)
