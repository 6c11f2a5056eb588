"""The one exception tree of jwks-cache.

::

    JwksCacheError
    ├── ConfigError            invalid configuration; the message names the field
    ├── SecurityError          a transport or key policy refused something
    │   └── ResponseTooLargeError
    ├── FetchError             the identity provider could not give a usable set (.url, .status)
    │   └── InvalidJwksError   the document is not a usable JWKS; the message names the JSON path
    ├── NotRegisteredError     no such tenant/provider registration
    ├── KeyNotFoundError       the set has no usable key for that kid
    ├── TokenError             a token failed verification (.reason); never carries claims
    │   └── InsufficientScopeError  a valid token lacks a required scope or role (HTTP 403)
    ├── RegistryClosedError    the Registry is not open
    └── StoreError             persistence failed; logged, never raised to lookups

No class derives from a builtin such as ``ValueError``: msgspec re-wraps those raised in
``__post_init__``, and callers catching ``KeyError`` around dict code must not swallow ours.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "ConfigError",
    "FetchError",
    "InsufficientScopeError",
    "InvalidJwksError",
    "JwksCacheError",
    "KeyNotFoundError",
    "NotRegisteredError",
    "RegistryClosedError",
    "ResponseTooLargeError",
    "SecurityError",
    "StoreError",
    "TokenError",
    "TokenReason",
]


class JwksCacheError(Exception):
    """Base of every error jwks-cache raises on purpose."""


class ConfigError(JwksCacheError):
    """A configuration value is invalid; the message names the field."""


class SecurityError(JwksCacheError):
    """A transport or key policy refused a URL, host, address, certificate or response."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ResponseTooLargeError(SecurityError):
    """The response body (after decoding) exceeded ``max_response_bytes``."""


class FetchError(JwksCacheError):
    """Fetching or refreshing a key set failed.

    Attributes:
        url: the URL of the request that failed, when known.
        status: the HTTP status code, when a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        #: worth retrying (connect/read errors, timeouts, 5xx, 408, 429); set by the fetch layer
        self.transient = transient
        #: seconds the server asked us to wait (Retry-After), when it did
        self.retry_after = retry_after


class InvalidJwksError(FetchError):
    """The document is not a usable JWK Set; the message names the JSON path at fault."""


class NotRegisteredError(JwksCacheError):
    """No provider is registered under that tenant and provider name."""


class KeyNotFoundError(JwksCacheError):
    """The provider's current key set has no usable key with that ``kid`` (and algorithm)."""


#: Every code ``TokenError.reason`` can hold: an ``if``/``match`` over them can be checked exhaustively.
TokenReason: TypeAlias = Literal[
    "alg_not_allowed",
    "audience_mismatch",
    "bad_signature",
    "claim_mismatch",
    "crit_unsupported",
    "expired",
    "insufficient_scope",
    "issued_in_future",
    "issuer_mismatch",
    "malformed",
    "malformed_claims",
    "malformed_header",
    "missing_claim",
    "not_yet_valid",
    "tenant_not_allowed",
    "token_too_large",
    "unknown_user",
    "unsupported_header",
]


class TokenError(JwksCacheError):
    """A token failed verification.

    ``reason`` is a short machine-readable code (``"expired"``, ``"bad_signature"``, ...; every
    one is listed in ``TokenReason``). The message and attributes never include the token's claims.
    """

    def __init__(self, message: str, *, reason: TokenReason) -> None:
        super().__init__(message)
        self.reason = reason


class InsufficientScopeError(TokenError):
    """The token verified, but lacks a scope or role the caller requires (RFC 6750 §3.1's
    ``insufficient_scope``: a 403, where other token errors are a 401).

    ``required`` names the missing scopes or roles; they come from configuration, never the token.
    """

    def __init__(self, message: str, *, required: tuple[str, ...]) -> None:
        super().__init__(message, reason="insufficient_scope")
        self.required = required


class RegistryClosedError(JwksCacheError):
    """The Registry is used outside its ``async with`` block."""


class StoreError(JwksCacheError):
    """A snapshot store failed; logged and counted, never raised to lookups."""
