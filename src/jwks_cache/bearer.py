"""RFC 6750 bearer-token answers, framework-free: the one mapping every web integration shares.

An integration reads the ``Authorization`` header with :func:`bearer_token`, verifies the token
with a Registry, and, when that fails, turns the error into a :class:`Challenge` with
:func:`challenge_for`: the status, the ``WWW-Authenticate`` header and a JSON body, so Flask,
Django and Quart refuse a request the same way:

* no token: ``401`` and a bare ``WWW-Authenticate: Bearer`` (RFC 6750 §3.1: no error code when
  the request carried no credentials);
* a token that fails verification (bad signature, expired, wrong audience, unknown kid or
  tenant): ``401`` and ``error="invalid_token"``, its reason as ``error_description``;
* a valid token lacking a scope or role: ``403`` and ``error="insufficient_scope"``;
* keys unavailable (the identity provider is down past the stale window, or the lookup ran out of
  time): ``503`` without a challenge, as the client's token is not at fault.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

from jwks_cache import (
    FetchError,
    InsufficientScopeError,
    KeyNotFoundError,
    NotRegisteredError,
    RegistryClosedError,
    TokenError,
)

__all__ = ["Challenge", "bearer_token", "challenge_for"]

#: The errors :func:`challenge_for` answers; anything else (a ConfigError, a bug) is the server's to raise.
REFUSALS: Final = (TokenError, KeyNotFoundError, NotRegisteredError, FetchError, RegistryClosedError, TimeoutError)
_MAX_TOKEN_CHARS: Final = 16_384  # a larger Authorization header is not a token any registry will verify


@dataclass(frozen=True)
class Challenge:
    """How to refuse a request: ``status``, ``headers`` (``WWW-Authenticate`` where RFC 6750 asks
    for one) and a JSON-ready ``body``; ``error`` is the RFC 6750 code, None for a missing token."""

    status: int
    error: str | None = None
    description: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, str]:
        """``{"error": ..., "error_description": ...}`` as RFC 6749 §5.2 error bodies; no ``error``
        when the request carried no token (RFC 6750 §3.1: no error code then)."""
        body = {"error": self.error} if self.error else {}
        body["error_description"] = self.description or "a bearer token is required"
        return body


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization or len(authorization) > _MAX_TOKEN_CHARS:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def challenge_for(error: BaseException | None, *, scopes: Collection[str] = (), realm: str | None = None) -> Challenge:
    """The RFC 6750 answer to a refused request: ``error`` None means the request had no token.

    ``scopes`` (the ones the endpoint requires) go into an ``insufficient_scope`` challenge's
    ``scope`` attribute. Raises ``error`` itself when it is not a refusal (see :data:`REFUSALS`).
    """
    if error is None:
        return Challenge(401, headers={"WWW-Authenticate": _challenge_header(realm)})
    if isinstance(error, InsufficientScopeError):
        attributes = {"error": "insufficient_scope", "error_description": "insufficient_scope"}
        if scopes:
            attributes["scope"] = " ".join(sorted(scopes))
        return Challenge(
            403,
            "insufficient_scope",
            "insufficient_scope",
            headers={"WWW-Authenticate": _challenge_header(realm, **attributes)},
        )
    reason = _invalid_token_reason(error)
    if reason is not None:
        header = _challenge_header(realm, error="invalid_token", error_description=reason)
        return Challenge(401, "invalid_token", reason, headers={"WWW-Authenticate": header})
    if isinstance(error, FetchError | RegistryClosedError | TimeoutError):
        return Challenge(503, "temporarily_unavailable", "signing keys unavailable", headers={"Retry-After": "5"})
    raise error


def _invalid_token_reason(error: BaseException) -> str | None:
    if isinstance(error, TokenError):
        return _safe(error.reason)
    if isinstance(error, KeyNotFoundError):
        return "unknown_kid"
    if isinstance(error, NotRegisteredError):
        return "unknown_tenant"
    return None


def _safe(reason: str) -> str:
    """A reason fit for a quoted-string: RFC 6750 §3 allows %x20-21 / %x23-5B / %x5D-7E only."""
    return "".join(c for c in reason if 0x20 <= ord(c) <= 0x7E and c not in '"\\') or "invalid_token"


def _challenge_header(realm: str | None, **attributes: Any) -> str:
    if realm is not None:
        attributes = {"realm": _safe(realm), **attributes}
    if not attributes:
        return "Bearer"
    return "Bearer " + ", ".join(f'{name}="{value}"' for name, value in attributes.items())
