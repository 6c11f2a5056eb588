"""Scopes and roles in verified claims: the one reading every integration uses.

Identity providers spell scopes two ways (RFC 8693 §4.2 / RFC 9068 ``scope``: one space-separated
string; Entra ID and Okta's ``scp``: a string or an array) and put roles in a claim of their
choosing (``roles`` for Entra, ``cognito:groups``, ``realm_access.roles`` for Keycloak). Each
framework integration would otherwise read them its own slightly different way, so this module
reads them once; a missing or malformed claim is simply no scopes, never an error of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from .._errors import InsufficientScopeError

__all__ = ["require_roles", "require_scopes", "roles_of", "scopes_of"]

_SCOPE_CLAIMS: Final = ("scope", "scp")
_SHOWN: Final = 10  # missing names quoted in a message (they come from configuration, not the token)


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token grants: ``scope`` and ``scp``, each a space-separated string or an array."""
    found: set[str] = set()
    for name in _SCOPE_CLAIMS:
        found.update(_words(claims.get(name)))
    return frozenset(found)


def roles_of(claims: Mapping[str, Any], claim: str = "roles") -> frozenset[str]:
    """The roles in ``claim``, which may be a dotted path into nested objects (``realm_access.roles``)."""
    value: Any = claims
    for part in claim.split("."):
        if not isinstance(value, Mapping):
            return frozenset()
        value = value.get(part)
    return frozenset(_words(value))


def require_scopes(claims: Mapping[str, Any], required: Iterable[str]) -> None:
    """Raise :class:`InsufficientScopeError` unless the token grants every scope in ``required``."""
    _require(set(required) - scopes_of(claims), "scope")


def require_roles(claims: Mapping[str, Any], required: Iterable[str], *, claim: str = "roles") -> None:
    """Raise :class:`InsufficientScopeError` unless ``claim`` holds every role in ``required``."""
    _require(set(required) - roles_of(claims, claim), "role")


def _require(missing: set[str], kind: str) -> None:
    if missing:
        names = sorted(missing)
        shown = ", ".join(repr(n) for n in names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        raise InsufficientScopeError(f"token lacks the required {kind}(s) {shown}", required=tuple(names))


def _words(value: object) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return ()
