"""What every web integration shares: a request's bearer token, its verification, RFC 6750 answers.

Framework-free on purpose: the Litestar, Starlette and FastAPI modules only translate
:class:`Refused` into their own exceptions, so every integration answers the same status, the same
``WWW-Authenticate`` challenge and the same reason codes for the same token.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

from jwks_cache import (
    ConfigError,
    FetchError,
    InsufficientScopeError,
    KeyNotFoundError,
    NotRegisteredError,
    ProviderConfig,
    Registry,
    RegistryClosedError,
    TokenError,
    load_providers,
    require_roles,
    require_scopes,
)

__all__ = [
    "STATE_KEY",
    "Connection",
    "Refused",
    "Selector",
    "check_roles",
    "check_scopes",
    "header",
    "open_registry",
    "path_param",
    "select",
    "verify_authorization",
]

logger = logging.getLogger("jwks_cache.web")

#: where the lifespan helpers leave the open Registry (app state, or the lifespan state)
STATE_KEY: Final = "jwks_registry"
#: RFC 6749 §A.4 scope-token characters: anything else is left out of a ``scope="..."`` parameter
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class Connection(Protocol):
    """What the selectors read; Litestar's and Starlette's connections both have it."""

    @property
    def path_params(self) -> Mapping[str, Any]: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


#: a tenant or provider name: fixed, or read from each request (None: the request names none)
Selector = str | Callable[[Any], str | None]


def path_param(name: str) -> Callable[[Connection], str | None]:
    """A selector reading the path parameter ``name`` (``/tenants/{tenant}/...``)."""

    def read(connection: Connection) -> str | None:
        value = connection.path_params.get(name)
        return value if isinstance(value, str) else None

    return read


def header(name: str) -> Callable[[Connection], str | None]:
    """A selector reading the request header ``name``: only for gateways that set it, never clients.

    Whatever a header names, the token must still verify with that provider's keys; a client that
    may set it can only pick which of your registered providers it is checked against.
    """

    def read(connection: Connection) -> str | None:
        return connection.headers.get(name)

    return read


def select(selector: Selector, connection: Any) -> str | None:
    """The name ``selector`` gives for this request."""
    return selector if isinstance(selector, str) else selector(connection)


class Refused(Exception):
    """A request the integration turns away, as an HTTP answer (status, detail, headers)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def _challenge(error: str | None = None, description: str | None = None, scope: Iterable[str] = ()) -> dict[str, str]:
    params = []
    if error is not None:
        params.append(f'error="{error}"')
    if description is not None:
        params.append(f'error_description="{description}"')
    scopes = [s for s in scope if _SCOPE_TOKEN.fullmatch(s)]
    if scopes:
        params.append(f'scope="{" ".join(scopes)}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(params) if params else "Bearer"}


def _invalid_token(reason: str) -> Refused:
    # reason codes are snake_case words of jwks-cache's own: safe inside a quoted-string
    return Refused(401, f"invalid token ({reason})", _challenge("invalid_token", reason))


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header.

    Raises:
        Refused: no bearer credentials (401 with a bare challenge, RFC 6750 §3.1: a client that
            sent none, or another scheme, learns only that a bearer token is wanted), or an empty
            one (400 ``invalid_request``).
    """
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Refused(401, "a bearer token is required", _challenge())
    token = token.strip()
    if not token or " " in token:
        raise Refused(400, "malformed Authorization header", _challenge("invalid_request", "malformed_header"))
    return token


async def verify_authorization(
    registry: Registry | None,
    authorization: str | None,
    *,
    tenant: str | None,
    provider: str | None,
    audience: str | Sequence[str] | None = None,
    issuer: str | Sequence[str] | None = None,
    leeway: float = 0.0,
    require_claims: Sequence[str] = (),
) -> dict[str, Any]:
    """The verified claims of a request's ``Authorization`` header.

    Raises:
        Refused: 401 (no or an invalid token, an unknown tenant or provider), 400 (a malformed
            header), or 503 (no signing keys can be had, or the registry is not open: neither is
            the caller's fault, and a retry may succeed).
    """
    token = bearer_token(authorization)
    if tenant is None or provider is None:
        raise _invalid_token("not_registered")
    if registry is None:
        raise Refused(503, "signing keys unavailable (the registry is not open)")
    try:
        claims = await registry.verify(
            token, tenant=tenant, provider=provider, audience=audience, issuer=issuer, leeway=leeway
        )
    except TokenError as exc:
        raise _invalid_token(exc.reason) from exc
    except KeyNotFoundError as exc:
        raise _invalid_token("unknown_kid") from exc
    except NotRegisteredError as exc:
        raise _invalid_token("not_registered") from exc
    except (FetchError, RegistryClosedError) as exc:
        raise Refused(503, "signing keys unavailable") from exc
    if any(name not in claims for name in require_claims):
        raise _invalid_token("missing_claim")
    return claims


def check_scopes(claims: Mapping[str, Any], scopes: Iterable[str]) -> None:
    """Raise a 403 ``insufficient_scope`` :class:`Refused` naming the scopes unless the token has them all."""
    try:
        require_scopes(claims, scopes)
    except InsufficientScopeError as exc:
        raise Refused(403, str(exc), _challenge("insufficient_scope", scope=exc.required)) from exc


def check_roles(claims: Mapping[str, Any], roles: Iterable[str], *, claim: str = "roles") -> None:
    """Raise a 403 ``insufficient_scope`` :class:`Refused` unless ``claim`` holds every role."""
    try:
        require_roles(claims, roles, claim=claim)
    except InsufficientScopeError as exc:
        # roles are not OAuth scopes: the challenge names none, the detail names the roles
        raise Refused(403, str(exc), _challenge("insufficient_scope")) from exc


@asynccontextmanager
async def open_registry(
    providers: Iterable[ProviderConfig] = (),
    *,
    config_file: str | os.PathLike[str] | None = None,
    registry: Callable[[], Registry] | None = None,
    warm_timeout: float | None = 10.0,
) -> AsyncIterator[Registry]:
    """Open a Registry, register the providers and wait (``warm_timeout`` at most) for their keys.

    An app entering this in its lifespan starts serving only once its providers have a key set, so
    no first request waits on an identity provider; one still cold after ``warm_timeout`` is logged
    and fetched by the first request that needs it. ``warm_timeout=None`` does not wait at all.

    Args:
        providers: the registrations.
        config_file: a ``jwks-cache serve`` file: its providers are added, and its ``[registry]``
            and ``[store]`` tables make the Registry.
        registry: makes the Registry (not entered), e.g. ``lambda: Registry(store=...)``; not with
            ``config_file``, whose floors would otherwise be silently dropped.

    Raises:
        ConfigError: a bad file or registration, or both ``config_file`` and ``registry``.
    """
    configs = list(providers)
    factory: Callable[[], Registry] = registry or Registry
    if config_file is not None:
        if registry is not None:
            raise ConfigError("config_file and registry: give one (the file's [registry] table makes the Registry)")
        loaded = load_providers(config_file)
        configs.extend(loaded.providers)
        factory = loaded.new_registry
    async with factory() as reg:
        await reg.register_many(configs)
        if warm_timeout is not None:
            for status in await reg.warm(max_wait=warm_timeout):
                logger.warning(
                    "jwks-cache: %s/%s has no signing keys yet (%s); its requests wait for a fetch",
                    status.tenant,
                    status.provider,
                    status.last_error or f"no answer within warm_timeout={warm_timeout}",
                )
        yield reg
