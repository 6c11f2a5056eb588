"""RFC 6750 bearer-token answers, framework-free: the one mapping every web integration shares.

Flask and Django (:class:`jwks_cache.sync.TokenGuard`), Quart, Litestar, Starlette and FastAPI all
read the ``Authorization`` header with :func:`bearer_token`, verify the token with a Registry
(:func:`verify_authorization` for the async ones), check scopes and roles with
:func:`check_grants`, and turn a refusal into the same :class:`Challenge` with
:func:`challenge_for`: the status, the ``WWW-Authenticate`` header and a JSON-ready body. So a
token is refused alike whichever framework serves the route:

* no ``Authorization`` header, or another scheme: ``401`` and a bare ``WWW-Authenticate: Bearer``
  (plus ``realm``; RFC 6750 §3.1: no error code when the request carried no bearer credentials);
* ``Bearer`` with no token, or a token that is not one token68 word: ``400``
  ``error="invalid_request"``, ``error_description="malformed_header"``;
* a token that fails verification (bad signature, expired, wrong audience, unknown kid, a tenant
  or provider the registry does not know): ``401`` ``error="invalid_token"``, its reason code as
  ``error_description`` (``not_registered`` for an unknown tenant or provider);
* a valid token lacking a scope or role: ``403`` ``error="insufficient_scope"``, with the scopes the
  endpoint requires as ``scope="..."`` when a scope was missing;
* keys unavailable (the identity provider is down past the stale window, the registry is not
  open, or the lookup ran out of time): ``503`` with ``Retry-After`` and no challenge, as the
  client's token is not at fault.

Header parameter values are RFC 7235 quoted-strings: ``"`` and ``\\`` are escaped, and control
characters (CR, LF) and non-ASCII are dropped, so no reason, realm or scope can split a header.

The module also holds what the ASGI integrations share besides the answers: choosing the tenant
and provider per request (:func:`path_param`, :func:`header`) and opening a pre-warmed Registry
for an app's lifespan (:func:`open_registry`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
    require_roles,
    require_scopes,
)
from jwks_cache.config_file import load_providers

__all__ = [
    "REFUSALS",
    "STATE_KEY",
    "Challenge",
    "Connection",
    "MalformedAuthorizationError",
    "Refused",
    "Selector",
    "bearer_token",
    "challenge_for",
    "check_grants",
    "header",
    "open_registry",
    "path_param",
    "select",
    "verify_authorization",
]

logger = logging.getLogger("jwks_cache.web")

#: where the lifespan helpers leave the open Registry (app state, or the lifespan state)
STATE_KEY: Final = "jwks_registry"
#: seconds a 503 asks the client to wait: the registry's own retries run meanwhile
RETRY_AFTER: Final = "5"
_MAX_HEADER_CHARS: Final = 16_384  # a larger Authorization header is not a token any registry will verify
#: RFC 6750 §2.1 b64token: one word of these, optionally ``=``-padded
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: RFC 6749 §A.4 scope-token characters: a required scope of any other is left out of ``scope="..."``
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class MalformedAuthorizationError(TokenError):
    """``Authorization: Bearer`` without a token, or with something that is not one (RFC 6750 §3.1
    ``invalid_request``: a 400, as the request itself is malformed)."""

    def __init__(self, message: str = "malformed Authorization header") -> None:
        super().__init__(message, reason="malformed_header")


#: The errors :func:`challenge_for` answers; anything else (a ConfigError, a bug) is the server's to raise.
REFUSALS: Final = (TokenError, KeyNotFoundError, NotRegisteredError, FetchError, RegistryClosedError, TimeoutError)


@dataclass(frozen=True)
class Challenge:
    """How to refuse a request: ``status``, ``headers`` (``WWW-Authenticate`` where RFC 6750 asks
    for one, ``Retry-After`` on a 503) and a JSON-ready ``body``.

    ``error`` is the RFC 6750 code (None for a request without bearer credentials),
    ``description`` the reason code sent as ``error_description``, and ``detail`` a sentence for
    frameworks whose error bodies carry one (it never quotes the token or its claims).
    """

    status: int
    error: str | None = None
    description: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = "a bearer token is required"

    @property
    def body(self) -> dict[str, str]:
        """``{"error": ..., "error_description": ...}`` as RFC 6749 §5.2 error bodies; no ``error``
        when the request carried no token (RFC 6750 §3.1: no error code then)."""
        body = {"error": self.error} if self.error else {}
        body["error_description"] = self.description or self.detail
        return body


class Refused(Exception):
    """A request turned away: its :class:`Challenge`, for the framework to send as its own answer."""

    def __init__(self, challenge: Challenge) -> None:
        super().__init__(challenge.detail)
        self.challenge = challenge

    @property
    def status(self) -> int:
        return self.challenge.status

    @property
    def detail(self) -> str:
        return self.challenge.detail

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.challenge.headers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).

    Returns None when the request has no bearer credentials (no header, or another scheme).

    Raises:
        MalformedAuthorizationError: ``Bearer`` with no token, or one that is not a single
            RFC 6750 b64token (spaces, control characters, an oversized header).
    """
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if len(token) > _MAX_HEADER_CHARS or not _B64TOKEN.fullmatch(token):
        raise MalformedAuthorizationError()
    return token


def challenge_for(error: BaseException | None, *, scopes: Collection[str] = (), realm: str | None = None) -> Challenge:
    """The RFC 6750 answer to a refused request: ``error`` None means the request had no token.

    ``scopes`` (the ones the endpoint requires) go into an ``insufficient_scope`` challenge's
    ``scope`` attribute. Raises ``error`` itself when it is not a refusal (see :data:`REFUSALS`).
    """
    if error is None:
        return Challenge(401, headers={"WWW-Authenticate": _challenge_header(realm)})
    if isinstance(error, MalformedAuthorizationError):
        header = _challenge_header(realm, error="invalid_request", error_description=error.reason)
        return Challenge(400, "invalid_request", error.reason, {"WWW-Authenticate": header}, str(error))
    if isinstance(error, InsufficientScopeError):
        attributes = {"error": "insufficient_scope"}
        scope = " ".join(sorted({s for s in scopes if _SCOPE_TOKEN.fullmatch(s)}))
        if scope:
            attributes["scope"] = scope
        header = _challenge_header(realm, **attributes)
        return Challenge(403, "insufficient_scope", None, {"WWW-Authenticate": header}, str(error))
    reason = _invalid_token_reason(error)
    if reason is not None:
        header = _challenge_header(realm, error="invalid_token", error_description=reason)
        return Challenge(401, "invalid_token", reason, {"WWW-Authenticate": header}, f"invalid token ({reason})")
    if isinstance(error, FetchError | RegistryClosedError | TimeoutError):
        return Challenge(503, "temporarily_unavailable", None, {"Retry-After": RETRY_AFTER}, "signing keys unavailable")
    raise error


def check_grants(
    claims: Mapping[str, Any],
    *,
    scopes: Collection[str] = (),
    roles: Collection[str] = (),
    role_claim: str = "roles",
    realm: str | None = None,
) -> None:
    """Raise a 403 ``insufficient_scope`` :class:`Refused` unless the token grants every scope and role.

    A missing scope names the endpoint's scopes in the challenge; a missing role names none, as
    roles are not OAuth scopes (the detail names the roles).
    """
    try:
        require_scopes(claims, scopes)
    except InsufficientScopeError as exc:
        raise Refused(challenge_for(exc, scopes=scopes, realm=realm)) from exc
    try:
        require_roles(claims, roles, claim=role_claim)
    except InsufficientScopeError as exc:
        raise Refused(challenge_for(exc, realm=realm)) from exc


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
    scopes: Collection[str] = (),
    roles: Collection[str] = (),
    role_claim: str = "roles",
    realm: str | None = None,
) -> dict[str, Any]:
    """The verified claims of a request's ``Authorization`` header, granting ``scopes`` and ``roles``.

    ``tenant`` or ``provider`` None (the request names none) is an unknown registration;
    ``registry`` None (the app's lifespan has not opened it) is a 503.

    Raises:
        Refused: the RFC 6750 answer (see the module's documentation).
    """
    try:
        token = bearer_token(authorization)
        if token is None:
            raise Refused(challenge_for(None, realm=realm))
        if tenant is None or provider is None:
            raise NotRegisteredError("the request names no tenant or provider")
        if registry is None:
            raise RegistryClosedError("the registry is not open (outside the app's lifespan)")
        claims = await registry.verify(
            token, tenant=tenant, provider=provider, audience=audience, issuer=issuer, leeway=leeway
        )
        if any(name not in claims for name in require_claims):
            raise TokenError("the token lacks a required claim", reason="missing_claim")
    except REFUSALS as exc:
        raise Refused(challenge_for(exc, realm=realm)) from exc
    check_grants(claims, scopes=scopes, roles=roles, role_claim=role_claim, realm=realm)
    return claims


def _invalid_token_reason(error: BaseException) -> str | None:
    if isinstance(error, TokenError):
        return error.reason
    if isinstance(error, KeyNotFoundError):
        return "unknown_kid"
    if isinstance(error, NotRegisteredError):
        return "not_registered"
    return None


def _quoted(value: str) -> str:
    """``value`` as an RFC 7235 quoted-string: printable ASCII only (no CR/LF can split the
    header), with ``"`` and ``\\`` backslash-escaped."""
    printable = "".join(c for c in value if 0x20 <= ord(c) <= 0x7E)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _challenge_header(realm: str | None, **attributes: str) -> str:
    if realm is not None:
        attributes = {"realm": realm, **attributes}
    if not attributes:
        return "Bearer"
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in attributes.items())


# --- choosing the tenant and provider of a request (the ASGI integrations) ---


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


# --- a pre-warmed Registry for an app's lifespan ---


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
