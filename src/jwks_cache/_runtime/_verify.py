"""Verifying a token against a provider's keys, and following a re-registration mid-call.

Re-registering a tenant closes its old provider, which releases that provider's waiters with
``NotRegisteredError``; the tenant is still registered, so a call in progress carries on with the
registration now in place. :func:`on_current` is the one loop that does so, for every public call
that waits on keys. The warm paths (``get_key``, ``verify`` on a fresh set) never reach it: they
answer before any await, and enter it only when a first try on the provider in hand needs to wait,
so they pay no coroutine frame and no closure for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, TypeVarTuple

from .._config import ProviderConfig
from .._errors import ConfigError, NotRegisteredError, TokenError
from .._issuers import multi_tenant_forms, registration_issuers, template_problem
from .._jose._jwks import ALLOWED_DEFAULT, KeyEntry
from .._jose._jws import ParsedJws, check_alg, check_claims, check_key_issuer, verify_signature
from ._provider import Provider

__all__ = [
    "REPLACED_ROUNDS",
    "check_token",
    "first_signer",
    "issuer_argument",
    "on_current",
    "settle_signer",
    "warm_candidates",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

REPLACED_ROUNDS: Final = 3  # successors a call follows before giving up

#: the provider that replaced a closed one, if any (the Registry's, which knows what is registered)
Successor = Callable[[Provider], Provider | None]


async def on_current(
    found: Provider,
    successor_of: Successor,
    call: Callable[[Provider, *_Ts], Awaitable[_T]],
    *args: *_Ts,
    tries: int = REPLACED_ROUNDS + 1,
) -> _T:
    """``call(found, *args)``, or, when a re-registration replaces ``found`` meanwhile, ``call`` on its successor.

    At most ``tries`` calls: a registration replaced over and over fails the call instead. The
    arguments are passed along, not closed over: a closure would make the caller's locals cells,
    which every call of the caller, the warm ones included, would allocate.
    """
    for _ in range(tries - 1):
        try:
            return await call(found, *args)
        except NotRegisteredError:
            successor = successor_of(found)
            if successor is None:
                raise
            found = successor
    return await call(found, *args)


def warm_candidates(found: Provider, parsed: ParsedJws, now: float) -> tuple[KeyEntry, ...]:
    """The keys of a fresh set that may verify the token (a hit, counted), else none; no await.

    The algorithm is judged first, against the registration's allowlist: alg confusion is refused
    before any key is looked at.
    """
    check_alg(parsed.alg, found.config.algorithms or ALLOWED_DEFAULT)
    pub = found.published
    if pub is None or now >= pub.expires_mono:
        return ()
    candidates = pub.table.candidates(parsed.kid, parsed.alg)
    if candidates:
        found.counts.hits += 1
    return candidates


def first_signer(parsed: ParsedJws, candidates: tuple[KeyEntry, ...]) -> KeyEntry | None:
    """The key whose signature verifies, None if none does; candidates fit the alg already
    (KeyTable.candidates). The key is kept: one published with an ``issuer`` restricts the token."""
    for entry in candidates:
        if verify_signature(parsed, entry, fitted=True):
            return entry
    return None


async def settle_signer(found: Provider, parsed: ParsedJws, tried: Provider | None) -> tuple[Provider, KeyEntry]:
    """The key that signed the token, waiting for keys as needed; with the provider that holds it.

    ``tried``: the provider whose fresh keys the caller tried already, in vain; then only a
    replaced key remains to look for. A bad signature under a known kid triggers one throttled,
    unconditional refresh and one retry (the identity provider may have replaced the key).
    """
    if found is not tried:  # a successor, or no fresh set was at hand
        check_alg(parsed.alg, found.config.algorithms or ALLOWED_DEFAULT)
        signer = first_signer(parsed, await found.candidates(parsed.kid, parsed.alg))
        if signer is not None:
            return found, signer
    if parsed.kid is None or not await found.refresh_after_bad_signature():
        raise TokenError("signature verification failed", reason="bad_signature")
    signer = first_signer(parsed, await found.candidates(parsed.kid, parsed.alg, counted=False))
    if signer is None:
        raise TokenError("signature verification failed", reason="bad_signature")
    return found, signer


def check_token(
    parsed: ParsedJws,
    signer: KeyEntry,
    cfg: ProviderConfig,
    *,
    now: float,
    leeway: float,
    audience: str | Sequence[str] | None,
    issuer: tuple[str, ...] | None,
) -> dict[str, Any]:
    """The claims of a token whose signature verified, checked against the registration and the call.

    ``audience`` and ``issuer`` are the call's (None: the registration's); ``now`` is wall-clock.
    """
    expected_aud = audience if audience is not None else cfg.audience
    if issuer is None:  # the registration's; none configured means iss is not checked
        issuer = registration_issuers(cfg.issuer, cfg.accepted_issuers) or None
    claims = check_claims(
        parsed,
        now=now,
        leeway=leeway,
        audience=expected_aud,
        issuer=issuer,
        required=cfg.required_claims,
        tenants=cfg.allowed_tenant_ids,
        claim_values=cfg.claim_values,
    )
    if expected_aud is None and "aud" in claims:
        raise TokenError(
            "token has an audience but none is expected (set ProviderConfig.audience or pass audience=)",
            reason="audience_mismatch",
        )
    if signer.issuer is not None:
        registered = (cfg.issuer, *multi_tenant_forms(cfg.issuer)) if cfg.issuer is not None else ()
        check_key_issuer(claims, signer.issuer, registered)
    return claims


def issuer_argument(issuer: object) -> tuple[str, ...]:
    """``verify(issuer=...)`` checked: strings only, ``{tenantid}`` only as a whole path segment."""
    if isinstance(issuer, str):
        issuers: tuple[str, ...] = (issuer,)
    elif isinstance(issuer, Sequence) and all(isinstance(each, str) for each in issuer):
        issuers = tuple(issuer)
    else:
        raise ConfigError(f"issuer must be a str or a sequence of str (got {issuer!r})")
    for each in issuers:
        problem = template_problem(each)
        if problem is not None:
            raise ConfigError(f"issuer {problem} (got {each!r})")
    return issuers
