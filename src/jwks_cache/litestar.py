"""Bearer-token authentication for Litestar: one plugin, one Registry for the app's life.

::

    from litestar import Litestar, Request, get
    from jwks_cache import ProviderConfig
    from jwks_cache.litestar import JwksAuth, requires_scopes

    @get("/orders", guards=[requires_scopes("orders:read")])
    async def orders(request: Request[dict, dict, Any]) -> str:
        return request.user["sub"]

    app = Litestar([orders], plugins=[JwksAuth([ProviderConfig(tenant="acme", provider="okta", issuer=...)])])

The plugin opens the Registry in the app's lifespan (one task, as its task group needs) and waits,
``warm_timeout`` at most, for every provider's keys before the app serves. Its middleware verifies
``Authorization: Bearer`` on every route not excluded, puts the claims on ``request.auth`` and the
user (``retrieve_user_handler``, by default the claims) on ``request.user``, and answers RFC 6750:
401 with ``WWW-Authenticate: Bearer error="invalid_token", error_description="<reason>"`` (a bare
``Bearer`` challenge without a token), 403 ``insufficient_scope`` from the guards, and 503 while no
signing keys can be had. Needs the ``litestar`` extra.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from copy import copy
from typing import Any

from litestar import Litestar, asgi
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.plugins import InitPlugin
from litestar.types import ASGIApp, Guard, Method, Receive, Scope, Send
from litestar.utils.sync import ensure_async_callable

from jwks_cache import ConfigError, ProviderConfig, Registry, TokenError
from jwks_cache.asgi import create_app as create_control_plane
from jwks_cache.bearer import (
    STATE_KEY,
    Refused,
    Selector,
    challenge_for,
    check_grants,
    header,
    open_registry,
    path_param,
    select,
    verify_authorization,
)
from jwks_cache.config_file import load_providers

__all__ = [
    "PROVIDER_OPT",
    "TENANT_OPT",
    "JwksAuth",
    "JwksAuthenticationMiddleware",
    "header",
    "path_param",
    "requires_roles",
    "requires_scopes",
]

#: route ``opt`` keys choosing the tenant and provider of one route (a name, or a selector)
TENANT_OPT = "jwks_tenant"
PROVIDER_OPT = "jwks_provider"

#: what ``retrieve_user_handler`` is given: the verified claims and the connection
UserHandler = Callable[[dict[str, Any], ASGIConnection[Any, Any, Any, Any]], Any | Awaitable[Any]]


class JwksAuth(InitPlugin):
    """The plugin: a Registry in the lifespan, bearer authentication, the OpenAPI scheme.

    Args:
        providers: the registrations.
        config_file: a ``jwks-cache serve`` TOML file: its providers are added, and its
            ``[registry]`` and ``[store]`` tables make the Registry (read now, so a bad file
            fails at start-up).
        registry: makes the Registry (not entered) instead, e.g. ``lambda: Registry(store=...)``.
        tenant, provider: whose keys verify a request's token: a name, or a selector such as
            :func:`path_param` or :func:`header` (a callable of the connection). A route's
            ``opt={TENANT_OPT: ..., PROVIDER_OPT: ...}`` overrides them. Left out with exactly one
            registration in ``providers``/``config_file``, that one.
        accepted_audiences, accepted_issuers: replace the registration's audience and issuers
            (see :meth:`Registry.verify`); by default the registration's apply.
        require_claims: claims every token must carry (besides the registration's).
        leeway: seconds of clock skew tolerated on ``exp``/``nbf``/``iat``.
        retrieve_user_handler: ``(claims, connection) -> user`` (sync or async); a ``None`` user
            is a 401. By default the user is the claims.
        exclude, exclude_opt_key, exclude_http_methods: as Litestar's ``JWTAuth``: paths (regex)
            and routes (``opt={"exclude_from_auth": True}``) that need no token. The OpenAPI
            schema path is excluded as well. Only ``OPTIONS`` (CORS preflight) is excluded by
            default, not ``HEAD`` as in ``JWTAuth``: a ``@head`` route guards a resource too.
        warm_timeout: seconds the start-up waits for the providers' keys (``None``: no wait);
            providers still cold are logged and fetched by their first request.
        control_plane_path: mount :func:`jwks_cache.asgi.create_app` over the same Registry
            under this path, with ``admin_token`` and ``protect_reads`` (it checks its own token).
        security_scheme_name: the name of the bearer scheme in the OpenAPI document.
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig] = (),
        *,
        config_file: str | os.PathLike[str] | None = None,
        registry: Callable[[], Registry] | None = None,
        tenant: Selector | None = None,
        provider: Selector | None = None,
        accepted_audiences: str | Sequence[str] | None = None,
        accepted_issuers: str | Sequence[str] | None = None,
        require_claims: Sequence[str] = (),
        leeway: float = 0.0,
        retrieve_user_handler: UserHandler | None = None,
        exclude: str | list[str] | None = None,
        exclude_opt_key: str = "exclude_from_auth",
        exclude_http_methods: Sequence[Method] | None = ("OPTIONS",),
        warm_timeout: float | None = 10.0,
        control_plane_path: str | None = None,
        admin_token: str | None = None,
        protect_reads: bool = True,
        security_scheme_name: str = "BearerToken",
    ) -> None:
        self.providers = tuple(providers)
        self._new_registry = registry
        if config_file is not None:
            if registry is not None:
                raise ConfigError("config_file and registry: give one (the file's [registry] table makes the Registry)")
            loaded = load_providers(config_file)
            self.providers += loaded.providers
            self._new_registry = loaded.new_registry
        only = self.providers[0] if len(self.providers) == 1 else None
        self.tenant = tenant if tenant is not None or only is None else only.tenant
        self.provider = provider if provider is not None or only is None else only.provider
        self.accepted_audiences = accepted_audiences
        self.accepted_issuers = accepted_issuers
        self.require_claims = tuple(require_claims)
        self.leeway = leeway
        self.retrieve_user_handler = ensure_async_callable(retrieve_user_handler or _claims_are_the_user)
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
        self.exclude_opt_key = exclude_opt_key
        self.exclude_http_methods = exclude_http_methods
        self.warm_timeout = warm_timeout
        self.control_plane_path = control_plane_path
        self.admin_token = admin_token
        self.protect_reads = protect_reads
        self.security_scheme_name = security_scheme_name

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the lifespan, the middleware, the OpenAPI scheme and the control-plane mount."""
        app_config.lifespan.append(self._lifespan)
        exclude = list(self.exclude)
        openapi = app_config.openapi_config
        if openapi is not None:
            docs = openapi.openapi_router.path if openapi.openapi_router is not None else openapi.path
            exclude.append(f"^{re.escape((docs or '/schema').rstrip('/'))}(/|$)")  # the docs need no token
            self._document(app_config)
        app_config.middleware.insert(
            0,
            DefineMiddleware(
                JwksAuthenticationMiddleware,
                auth=self,
                exclude=exclude,
                exclude_from_auth_key=self.exclude_opt_key,
                exclude_http_methods=self.exclude_http_methods,
            ),
        )
        if self.control_plane_path is not None:
            app_config.route_handlers.append(self._control_plane_mount(self.control_plane_path))
        return app_config

    def _lifespan(self, app: Litestar) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            async with open_registry(
                self.providers, registry=self._new_registry, warm_timeout=self.warm_timeout
            ) as reg:
                app.state[STATE_KEY] = reg
                if self.control_plane_path is not None:
                    app.state[_CONTROL_PLANE_KEY] = create_control_plane(
                        reg, admin_token=self.admin_token, protect_reads=self.protect_reads
                    )
                try:
                    yield
                finally:
                    app.state.pop(STATE_KEY, None)
                    app.state.pop(_CONTROL_PLANE_KEY, None)

        return lifespan()

    def _document(self, app_config: AppConfig) -> None:
        """Show the bearer scheme, required by every operation, as Litestar's own JWTAuth does."""
        openapi = app_config.openapi_config = copy(app_config.openapi_config)
        assert openapi is not None
        scheme = SecurityScheme(
            type="http",
            scheme="Bearer",
            bearer_format="JWT",
            description="A token of a registered identity provider, verified by jwks-cache.",
        )
        components = Components(security_schemes={self.security_scheme_name: scheme})
        if isinstance(openapi.components, list):
            openapi.components = [*openapi.components, components]
        else:
            openapi.components = [components, openapi.components]
        requirement: SecurityRequirement = {self.security_scheme_name: []}
        openapi.security = [*(openapi.security or []), requirement]

    def _control_plane_mount(self, path: str) -> Any:
        prefix = "/" + path.strip("/")

        @asgi(prefix, is_mount=True, copy_scope=True, include_in_schema=False, opt={self.exclude_opt_key: True})
        async def control_plane(scope: Scope, receive: Receive, send: Send) -> None:
            # Litestar gives a mount the rest of the path ("/status/") and keeps root_path; the
            # control plane (as the ASGI spec) wants path to include its root_path instead
            rest = scope["path"].rstrip("/")
            root_path = scope.get("root_path", "") + prefix
            scope["root_path"] = root_path
            scope["path"] = root_path + rest
            app: ASGIApp | None = scope["litestar_app"].state.get(_CONTROL_PLANE_KEY)
            if app is None:  # outside the lifespan
                raise HTTPException(status_code=503, detail="the registry is not open")
            await app(scope, receive, send)

        return control_plane

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Verify the connection's bearer token with the tenant and provider chosen for its route."""
        opt = connection.route_handler.opt
        tenant = self._chosen(opt.get(TENANT_OPT, self.tenant), "tenant", connection)
        provider = self._chosen(opt.get(PROVIDER_OPT, self.provider), "provider", connection)
        try:
            claims = await verify_authorization(
                connection.app.state.get(STATE_KEY),
                connection.headers.get("authorization"),
                tenant=tenant,
                provider=provider,
                audience=self.accepted_audiences,
                issuer=self.accepted_issuers,
                leeway=self.leeway,
                require_claims=self.require_claims,
            )
        except Refused as refused:
            raise _http_error(refused) from refused.__cause__
        user = await self.retrieve_user_handler(claims, connection)
        if user is None:
            raise _http_error(Refused(challenge_for(TokenError("no such user", reason="unknown_user"))))
        return AuthenticationResult(user=user, auth=claims)

    @staticmethod
    def _chosen(selector: Selector | None, what: str, connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        if selector is None:  # a mistake of the app, not of the caller: a 500, said at the first request
            raise ConfigError(
                f"{connection.url.path}: no {what} to verify tokens with: give JwksAuth({what}=...) or the route's"
                f" opt={{{(TENANT_OPT if what == 'tenant' else PROVIDER_OPT)!r}: ...}}"
            )
        return select(selector, connection)


class JwksAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Litestar's authentication middleware over :meth:`JwksAuth.authenticate`."""

    def __init__(self, app: ASGIApp, auth: JwksAuth, **options: Any) -> None:
        super().__init__(app, **options)
        self.auth = auth

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        return await self.auth.authenticate(connection)


def requires_scopes(*scopes: str) -> Guard:
    """A guard: 403 ``insufficient_scope`` (``scope="..."`` in the challenge) unless the token grants every scope."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        try:
            check_grants(_claims_of(connection), scopes=scopes)
        except Refused as refused:
            raise _http_error(refused) from refused.__cause__

    return guard


def requires_roles(*roles: str, claim: str = "roles") -> Guard:
    """A guard: 403 ``insufficient_scope`` unless ``claim`` (a dotted path) holds every role."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        try:
            check_grants(_claims_of(connection), roles=roles, role_claim=claim)
        except Refused as refused:
            raise _http_error(refused) from refused.__cause__

    return guard


_CONTROL_PLANE_KEY = "jwks_control_plane"


def _claims_of(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    claims = connection.scope.get("auth")
    if not isinstance(claims, dict):  # a route excluded from authentication cannot ask for scopes
        raise ConfigError(f"{connection.url.path}: a scope or role guard on a route excluded from authentication")
    return claims


def _claims_are_the_user(claims: dict[str, Any], _: ASGIConnection[Any, Any, Any, Any]) -> Any:
    return claims


def _http_error(refused: Refused) -> HTTPException:
    return HTTPException(status_code=refused.status, detail=refused.detail, headers=refused.headers)
