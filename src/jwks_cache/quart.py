"""Quart integration: a Registry that lives as long as the app is serving, and ``require_token``.

``JwksCache(app, providers=[...])`` (or ``JwksCache(providers=...).init_app(app)``) opens a
Registry when the app starts serving, registers the providers, waits at most ``warm_timeout``
seconds for their keys, and closes the registry (flushing its store) when serving ends
(``before_serving``/``after_serving``; each serving period gets a new Registry).

``require_token(tenant=..., provider=..., scopes=..., roles=...)`` guards a route: the verified
claims are on ``g.jwt_claims`` (and :data:`current_claims`), and refusals follow RFC 6750 (see
:mod:`jwks_cache.bearer`): 401 ``WWW-Authenticate: Bearer`` without a token, 401
``invalid_token`` with the reason as ``error_description``, 403 ``insufficient_scope``, 503 while
the keys are unavailable. Quart runs on asyncio only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import AsyncExitStack
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar, cast

from quart import Quart, Request, current_app, g, request
from werkzeug.local import LocalProxy

from jwks_cache import ConfigError, ProviderConfig, Registry
from jwks_cache.bearer import Challenge, Refused, open_registry, select, verify_authorization

__all__ = ["JwksCache", "current_claims", "require_token"]

EXTENSION: Final = "jwks_cache"
_P = ParamSpec("_P")
_R = TypeVar("_R")

#: A Quart answer from a route: body, status and headers.
Refusal = tuple[dict[str, str], int, dict[str, str]]


class JwksCache:
    """The Registry of a Quart app, open while the app is serving.

    Args:
        app: the app, or None to call :meth:`init_app` later (an app factory).
        providers: registered when serving starts (more can be added with ``registry.register``).
        warm_timeout: seconds to wait at start-up for every provider's first keys; a provider still
            cold is logged and fetched by the first request that needs it. 0 skips the wait.
        registry_factory: makes the Registry (a new one each serving period, as a Registry opens
            once); defaults to ``Registry(**registry_kwargs)``.
        **registry_kwargs: the :class:`~jwks_cache.Registry` arguments.
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        providers: Iterable[ProviderConfig] = (),
        warm_timeout: float = 10.0,
        registry_factory: Callable[[], Registry] | None = None,
        **registry_kwargs: Any,
    ) -> None:
        if not (isinstance(warm_timeout, int | float) and 0 <= warm_timeout < float("inf")):
            raise ConfigError(f"warm_timeout: must be a finite number of seconds >= 0 (got {warm_timeout!r})")
        if registry_factory is not None and registry_kwargs:
            raise ConfigError("registry_factory: give the Registry arguments to the factory, not to JwksCache")
        self.providers = list(providers)
        self.warm_timeout = float(warm_timeout)
        self._factory = registry_factory or (lambda: Registry(**registry_kwargs))
        self._registry: Registry | None = None
        self._exit: AsyncExitStack | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        """Open the registry while ``app`` serves; it is ``app.extensions["jwks_cache"]`` meanwhile."""
        app.extensions[EXTENSION] = self
        app.before_serving(self._open)
        app.after_serving(self._close)

    @property
    def registry(self) -> Registry:
        """The open Registry (``RuntimeError`` outside the serving period)."""
        if self._registry is None:
            raise RuntimeError("the Registry is open only while the app is serving")
        return self._registry

    async def _open(self) -> None:
        """Enter a new Registry (one opens once), register and pre-warm; undone if any step fails.

        The registry's ``async with`` is split between ``before_serving`` and ``after_serving``:
        Quart (and every ASGI server's lifespan) runs both in the one lifespan task, which is what
        the registry's task group needs; ``while_serving`` would keep it in one function, but its
        generator is made once, so an app could serve only once (a second ``test_app()`` fails).
        """
        async with AsyncExitStack() as stack:
            registry = await stack.enter_async_context(
                open_registry(self.providers, registry=self._factory, warm_timeout=self.warm_timeout or None)
            )
            self._registry, self._exit = registry, stack.pop_all()

    async def _close(self) -> None:
        """Leave the registry: cancel its loops and flush its store."""
        exit_stack, self._exit, self._registry = self._exit, None, None
        if exit_stack is not None:
            await exit_stack.aclose()


def _current_registry() -> Registry:
    extension = current_app.extensions.get(EXTENSION)
    if extension is None:
        raise RuntimeError("require_token needs JwksCache(app, ...) or JwksCache(...).init_app(app)")
    return cast(JwksCache, extension).registry


def _claims() -> dict[str, Any]:
    claims = g.get("jwt_claims")
    if claims is None:
        raise RuntimeError("no verified token in this request: guard the route with @require_token(...)")
    return cast("dict[str, Any]", claims)


#: The verified claims of the current request, as ``g.jwt_claims`` (quart-auth's ``current_user`` for JWTs).
current_claims: dict[str, Any] = cast("dict[str, Any]", LocalProxy(_claims))


def require_token(
    *,
    tenant: str | Callable[[Request], str],
    provider: str | Callable[[Request], str],
    scopes: Collection[str] = (),
    roles: Collection[str] = (),
    role_claim: str = "roles",
    audience: str | Sequence[str] | None = None,
    issuer: str | Sequence[str] | None = None,
    realm: str | None = None,
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R | Refusal]]]:
    """Guard a route: it runs only for a verified bearer token granting ``scopes`` and ``roles``.

    ``tenant`` and ``provider`` may be callables of the request, e.g.
    ``tenant=lambda request: request.view_args["tenant"]``. ``roles`` are read from
    ``role_claim`` (a dotted path such as ``realm_access.roles`` for Keycloak).
    """
    required_scopes, required_roles = tuple(scopes), tuple(roles)

    def decorate(handler: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R | Refusal]]:
        @wraps(handler)
        async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R | Refusal:
            try:
                claims = await verify_authorization(
                    _current_registry(),
                    request.headers.get("Authorization"),
                    tenant=select(tenant, request),
                    provider=select(provider, request),
                    audience=audience,
                    issuer=issuer,
                    scopes=required_scopes,
                    roles=required_roles,
                    role_claim=role_claim,
                    realm=realm,
                )
            except Refused as refused:
                return _refusal(refused.challenge)
            g.jwt_claims = claims
            return await handler(*args, **kwargs)

        return guarded

    return decorate


def _refusal(challenge: Challenge) -> Refusal:
    return challenge.body, challenge.status, challenge.headers
