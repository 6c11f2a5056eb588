"""Which ``iss`` values a registration accepts: exact issuers, and tenant templates of multi-tenant IdPs.

A multi-tenant identity provider (Microsoft Entra ID's ``common`` and ``organizations`` endpoints)
signs every tenant's tokens with one key set and names each token's issuer after its tenant:
``https://login.microsoftonline.com/{tenantid}/v2.0`` with the token's ``tid`` in place of the
placeholder. Matching such a template must not let a token choose more than a tenant: ``tid`` is
substituted only when it is a plain identifier (no ``/``, ``.``, ``%`` or other URL syntax, at most
64 characters), the placeholder may only fill one whole path segment, and the result must equal
``iss`` byte for byte. Nothing here is normalised: two spellings of one URL are two issuers.

Pure functions, cached by their string arguments: they run on every verified token, and the issuers
of ten thousand registrations are a few dozen distinct strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "MULTI_TENANT_SEGMENTS",
    "TENANT_ID",
    "TENANT_PLACEHOLDER",
    "describe",
    "discovery_accepts",
    "filled",
    "is_tenant_id",
    "issuer_matches",
    "multi_tenant_forms",
    "registration_issuers",
    "template_problem",
]

TENANT_PLACEHOLDER: Final = "{tenantid}"
#: path segments of Entra ID's multi-tenant endpoints, whose discovery documents name a template
MULTI_TENANT_SEGMENTS: Final = frozenset({"common", "organizations", "consumers"})
#: a tenant id a template may take: a GUID, or any plain identifier (no URL syntax can get in)
TENANT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CACHE_SIZE: Final = 4096
_SHOWN_VALUES: Final = 5
_SHOWN_CHARS: Final = 120


def is_tenant_id(value: object) -> bool:
    """Whether ``value`` (a token's ``tid``, untrusted) may be put into an issuer template."""
    return isinstance(value, str) and TENANT_ID.fullmatch(value) is not None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def template_problem(issuer: str) -> str | None:
    """Why ``issuer`` is not a usable tenant template; None when it is one, or has no placeholder.

    A template is an absolute http(s) URL whose placeholder is one whole path segment, once: in
    the host it would let a tenant id pick the server, inside a segment it would let one tenant's
    id complete another's name.
    """
    count = issuer.count(TENANT_PLACEHOLDER)
    if count == 0:
        return None
    if count > 1:
        return f"may hold {TENANT_PLACEHOLDER} only once"
    try:
        parts = urlsplit(issuer)
    except ValueError:
        return f"with {TENANT_PLACEHOLDER} must be a valid URL"
    if parts.scheme not in ("http", "https") or not parts.netloc or TENANT_PLACEHOLDER in parts.netloc:
        return f"with {TENANT_PLACEHOLDER} must be an absolute http(s) URL with {TENANT_PLACEHOLDER} in its path"
    if TENANT_PLACEHOLDER not in parts.path.split("/"):
        return f"must hold {TENANT_PLACEHOLDER} as one whole path segment"
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def multi_tenant_forms(issuer: str) -> tuple[str, ...]:
    """The templates an issuer of a multi-tenant endpoint stands for, one per such path segment.

    ``https://login.microsoftonline.com/common/v2.0`` gives
    ``("https://login.microsoftonline.com/{tenantid}/v2.0",)``, on any host (sovereign clouds and
    custom domains have the same layout); every other byte is kept as configured.
    """
    try:
        parts = urlsplit(issuer)
    except ValueError:
        return ()
    head = f"{parts.scheme}://{parts.netloc}"
    if not issuer.startswith(head):  # a spelling urlsplit normalised (an upper-case scheme): no forms
        return ()
    rest = issuer[len(head) :]
    path_end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    segments, tail = rest[:path_end].split("/"), rest[path_end:]
    forms: list[str] = []
    for index, segment in enumerate(segments):
        if segment in MULTI_TENANT_SEGMENTS:
            templated = [*segments[:index], TENANT_PLACEHOLDER, *segments[index + 1 :]]
            forms.append(head + "/".join(templated) + tail)
    return tuple(forms)


def discovery_accepts(configured: str, discovered: str) -> bool:
    """OIDC Discovery §4.3: the document's issuer equals the configured one, byte for byte; or the
    configured issuer is a multi-tenant endpoint and the document names its tenant template (the
    same scheme, host, port and other path segments, ``{tenantid}`` in that segment's place)."""
    return discovered == configured or discovered in multi_tenant_forms(configured)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def registration_issuers(issuer: str | None, accepted: tuple[str, ...]) -> tuple[str, ...]:
    """Every ``iss`` form a registration accepts: its issuer, that issuer's tenant templates when it
    is a multi-tenant endpoint (what its discovery document names), then ``accepted_issuers``."""
    found = (issuer, *multi_tenant_forms(issuer)) if issuer is not None else ()
    return tuple(dict.fromkeys((*found, *accepted)))


def issuer_matches(expected: str, iss: object, tid: object) -> bool:
    """Whether a token's ``iss`` is ``expected``, a template being filled with the token's ``tid``."""
    if TENANT_PLACEHOLDER not in expected:
        return iss == expected
    return iss is not None and iss == filled(expected, tid)


def filled(issuer: str, tid: object) -> str | None:
    """``issuer`` with the token's ``tid`` in its placeholder; None when that cannot be done safely."""
    if TENANT_PLACEHOLDER not in issuer:
        return issuer
    if not is_tenant_id(tid) or template_problem(issuer) is not None:
        return None
    assert isinstance(tid, str)
    return issuer.replace(TENANT_PLACEHOLDER, tid)


def describe(values: Sequence[str]) -> str:
    """Configured values for an error message, bounded: ``'a', 'b' and 3 more``.

    Only configuration goes through here, never a token's claims.
    """
    shown = ", ".join(
        repr(v if len(v) <= _SHOWN_CHARS else v[: _SHOWN_CHARS - 3] + "...") for v in values[:_SHOWN_VALUES]
    )
    more = len(values) - _SHOWN_VALUES
    return f"{shown} and {more} more" if more > 0 else shown
