"""JWS compact parsing, signature verification and JWT claim checks, on cryptography directly.

This is the per-request hot path, so it skips joserfc (its generic header registry and key
guessing cost more than the signature) and trusts only what it checks itself:

- the token is bounded before any decoding, so a 10 MB header costs a length comparison;
- ``alg`` comes from an allow-list of asymmetric algorithms (RFC 8725 §3.1): ``none`` and HS* are
  refused before a key is looked at, so a public key can never become an HMAC secret;
- keys come only from the cached JWKS by ``kid``: ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never
  fetched or used (RFC 8725 §3.10), and ``crit`` is refused because we implement no extension
  (RFC 7515 §4.1.11), which also refuses unencoded payloads (RFC 7797 ``b64: false``).

``TokenError.reason`` codes: ``token_too_large``, ``malformed``, ``alg_not_allowed``,
``crit_unsupported``, ``unsupported_header``, ``malformed_claims``, ``expired``, ``not_yet_valid``,
``issued_in_future``, ``audience_mismatch``, ``issuer_mismatch``, ``tenant_not_allowed``,
``claim_mismatch``, ``missing_claim`` (and ``bad_signature``, raised by the Registry). Messages never
quote the token, its header values or its claims; they do name what was expected, which is
configuration (an issuer, an audience, accepted values) and the first thing a mismatch is debugged by.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .._errors import TokenError
from .._issuers import describe, filled, is_tenant_id, issuer_matches
from ._jwks import ALLOWED_DEFAULT, B64URL_CHARS, JsonProblem, KeyEntry, b64url_decode, decode_json, key_fits_alg
from ._nesting import json_problem

__all__ = [
    "ALLOWED_DEFAULT",
    "ParsedJws",
    "check_alg",
    "check_claims",
    "check_key_issuer",
    "key_fits_alg",
    "parse_jws",
    "verify_signature",
]

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# NumericDate beyond 2**53 is nonsense (and float arithmetic on it is inexact)
_MAX_NUMERIC_DATE: Final = 2.0**53
# a claim present as JSON null is malformed, not absent
_ABSENT: Final = object()


class ParsedJws:
    """A compact JWS split and decoded, not yet verified: nothing in it is trusted."""

    __slots__ = ("alg", "header", "kid", "payload_segment", "signature", "signing_input")

    def __init__(
        self,
        header: dict[str, Any],
        alg: str,
        kid: str | None,
        signing_input: bytes,
        signature: bytes,
        payload_segment: bytes,
    ) -> None:
        self.header = header
        self.alg = alg
        self.kid = kid
        self.signing_input = signing_input
        self.signature = signature
        self.payload_segment = payload_segment

    def __repr__(self) -> str:
        return f"ParsedJws(alg={self.alg!r}, kid={self.kid!r})"


def _malformed(what: str) -> TokenError:
    return TokenError(f"token is not a valid compact JWS: {what}", reason="malformed")


HeaderCache = dict[bytes, tuple[dict[str, Any], str, "str | None"]]
_HEADER_CACHE_SIZE: Final = 256  # distinct protected headers seen per registry: a few per IdP key


def parse_jws(
    token: str | bytes, *, max_token_bytes: int = 16384, header_cache: HeaderCache | None = None
) -> ParsedJws:
    """Split a compact JWS and vet its protected header.

    Args:
        token: the compact serialization, as text or ASCII bytes.
        max_token_bytes: longer tokens are refused before any decoding.

    Raises:
        TokenError: with reason ``token_too_large``, ``malformed``, ``alg_not_allowed``,
            ``crit_unsupported`` or ``unsupported_header``.
    """
    if not isinstance(token, str | bytes):
        raise _malformed("not text")
    if len(token) > max_token_bytes:
        raise TokenError(f"token is longer than {max_token_bytes} bytes", reason="token_too_large")
    if isinstance(token, str):
        if not token.isascii():
            raise _malformed("non-ASCII characters")
        token = token.encode("ascii")
    segments = token.split(b".")
    if len(segments) != 3:
        raise _malformed("not three segments")
    header_segment, payload_segment, signature_segment = segments
    signature = b64url_decode(signature_segment)
    if signature is None or B64URL_CHARS.fullmatch(payload_segment) is None:
        raise _malformed("bad base64url")
    # an IdP signs every token with one of a few identical headers: vet each only once per registry
    cached = header_cache.get(header_segment) if header_cache is not None else None
    if cached is None:
        header_bytes = b64url_decode(header_segment)
        if not header_bytes:
            raise _malformed("bad base64url")
        header = _decode_header(header_bytes)
        alg, kid = _vet_header(header)
        if header_cache is not None:
            if len(header_cache) >= _HEADER_CACHE_SIZE:
                header_cache.clear()
            header_cache[header_segment] = (header, alg, kid)
    else:
        header, alg, kid = cached
    return ParsedJws(
        header, alg, kid, token[: len(header_segment) + 1 + len(payload_segment)], signature, payload_segment
    )


def _decode_header(data: bytes) -> dict[str, Any]:
    """The protected header, with duplicate member names refused.

    Fast path: a flat header whose text has no more colons than it has members cannot repeat a
    name, so msgspec alone decides; anything else takes the strict decoder. Nesting is refused
    before msgspec recurses into it.
    """
    problem = json_problem(data)
    if problem is not None:
        raise _malformed(f"header {problem}")
    try:
        header = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed("header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    if data.count(b":") > len(header) or not all(isinstance(v, str | bool) for v in header.values()):
        try:
            decode_json(data)
        except JsonProblem as exc:
            raise _malformed(f"header {exc.message}") from exc
    return header


def _vet_header(header: dict[str, Any]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _malformed("header alg is missing or not a string")
    if alg not in ALLOWED_DEFAULT:
        raise TokenError("token alg is not allowed", reason="alg_not_allowed")
    if "crit" in header:
        raise TokenError("token header has crit extensions, none are supported", reason="crit_unsupported")
    if "b64" in header and header["b64"] is not True:
        raise TokenError("unencoded payloads (b64) are not supported", reason="unsupported_header")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise _malformed("header kid is not a string")
    return alg, kid


def check_alg(alg: str, allowed: Collection[str]) -> None:
    """Refuse ``alg`` unless it is both asymmetric and in the provider's ``allowed`` list.

    Membership is exact: allowing ``EdDSA`` does not allow ``Ed25519`` or ``Ed448`` tokens.

    Raises:
        TokenError: reason ``alg_not_allowed``.
    """
    if alg not in ALLOWED_DEFAULT or alg not in allowed:
        raise TokenError("token alg is not allowed", reason="alg_not_allowed")


def _rsa_params(alg: str) -> tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]:
    digest = _HASHES[alg[2:]]()
    if alg.startswith("RS"):
        return padding.PKCS1v15(), digest
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest  # RFC 7518 §3.5


# padding and hash objects are immutable descriptors: built once, not per verified token
_RSA_PARAMS: Final = {f"{p}{n}": _rsa_params(f"{p}{n}") for p in ("RS", "PS") for n in ("256", "384", "512")}
_ECDSA: Final = {f"ES{n}": ec.ECDSA(_HASHES[n]()) for n in ("256", "384", "512")}


def verify_signature(parsed: ParsedJws, entry: KeyEntry, *, fitted: bool = False) -> bool:
    """Whether ``entry`` verifies the token's signature; False for a key that does not fit its alg.

    ``fitted=True`` skips the fit check for keys that came from ``KeyTable.candidates``.
    """
    alg = parsed.alg
    if not fitted and not key_fits_alg(entry, alg):
        return False
    key = entry.verifier
    data = parsed.signing_input
    signature = parsed.signature
    kty = entry.kty  # the verifier's type follows from kty (checked when the key was parsed)
    try:
        if kty == "RSA":
            pad, digest = _RSA_PARAMS[alg]
            key.verify(signature, data, pad, digest)  # type: ignore[attr-defined]
        elif kty == "EC":
            # JWS carries raw r||s of fixed width (RFC 7518 §3.4); anything else is not a signature
            assert isinstance(key, ec.EllipticCurvePublicKey)
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:size]), int.from_bytes(signature[size:]))
            key.verify(der, data, _ECDSA[alg])
        elif kty == "OKP":
            key.verify(signature, data)  # type: ignore[attr-defined]
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def check_claims(
    parsed: ParsedJws,
    *,
    now: float,
    leeway: float,
    audience: str | Sequence[str] | None,
    issuer: str | Sequence[str] | None,
    required: Sequence[str] = (),
    tenants: Collection[str] = (),
    claim_values: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Decode the payload and check the registered time, audience and issuer claims (RFC 7519 §4.1),
    then the registration's tenant and claim-value rules.

    Call only after the signature verified. Comparisons are written to fail closed, so a NaN
    ``now`` or ``leeway`` rejects the token instead of skipping the check.

    Args:
        parsed: the token from :func:`parse_jws`.
        now: wall-clock seconds since the epoch (from the Clock seam).
        leeway: clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
        audience: when given, ``aud`` must contain it (or one of them); a missing ``aud`` fails.
        issuer: when given, ``iss`` must equal it (or one of them); an issuer holding ``{tenantid}``
            matches with the token's ``tid`` in its place (see :mod:`._issuers`).
        required: claim names that must be present (the registration's ``required_claims``).
        tenants: when non-empty, ``tid`` must be one of them (``allowed_tenant_ids``).
        claim_values: claim name -> accepted values; the claim must be present and be one of them,
            or, for an array, hold at least one of them (``ProviderConfig.claim_values``).

    Returns:
        The claims.

    Raises:
        TokenError: reason ``malformed_claims``, ``expired``, ``not_yet_valid``, ``issued_in_future``,
            ``audience_mismatch``, ``issuer_mismatch``, ``tenant_not_allowed``, ``claim_mismatch`` or
            ``missing_claim``.
    """
    claims = _decode_claims(parsed.payload_segment)
    for name in required:
        if name not in claims:  # the name is the registration's, never the token's: safe to quote
            raise TokenError(f"token lacks the required claim {name!r}", reason="missing_claim")
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is not None and not now < exp + leeway:
        raise TokenError("token has expired", reason="expired")
    if nbf is not None and not now + leeway >= nbf:
        raise TokenError("token is not valid yet (nbf)", reason="not_yet_valid")
    if iat is not None and not iat <= now + leeway:
        raise TokenError("token was issued in the future (iat)", reason="issued_in_future")
    _check_audience(claims.get("aud", _ABSENT), audience)
    iss = claims.get("iss", _ABSENT)
    if iss is not _ABSENT and not isinstance(iss, str):
        raise TokenError("token iss is not a string", reason="malformed_claims")
    tid = claims.get("tid")
    if issuer is not None:
        _check_issuer(iss, tid, issuer)
    if tenants and (not isinstance(tid, str) or tid not in tenants):
        raise TokenError(
            f"token tenant (tid) is not one of the allowed tenants {describe(tuple(tenants))}",
            reason="tenant_not_allowed",
        )
    if claim_values:
        _check_claim_values(claims, claim_values)
    return claims


def check_key_issuer(claims: Mapping[str, Any], key_issuer: str, registered: Sequence[str]) -> None:
    """A key published with its own ``issuer`` member (Entra ID's) verifies only that issuer's tokens.

    The key's issuer, with the token's ``tid`` in a ``{tenantid}`` placeholder, must equal the
    token's ``iss``; or ``iss`` names the token's tenant as a path segment and one of the
    ``registered`` issuers, filled the same way, equals the key's: an Entra v1 token
    (``https://sts.windows.net/{tid}/``) is signed by keys that name the v2 issuer. Microsoft's own
    validator (``EnableAadSigningKeyIssuerValidation``) applies the same rule.

    Raises:
        TokenError: reason ``issuer_mismatch``.
    """
    tid, iss = claims.get("tid"), claims.get("iss")
    effective = filled(key_issuer, tid)
    if effective is not None and effective == iss:
        return
    # another form of the same tenant's issuer: iss names the tenant, and the registration's issuer
    # for that tenant is the key's
    if (
        effective is not None
        and is_tenant_id(tid)
        and isinstance(iss, str)
        and tid in iss.split("/")
        and any(filled(issuer, tid) == effective for issuer in registered)
    ):
        return
    raise TokenError(
        f"token issuer does not match the issuer its signing key is published for ({describe((key_issuer,))})",
        reason="issuer_mismatch",
    )


def _check_issuer(iss: object, tid: object, expected: str | Sequence[str]) -> None:
    if isinstance(expected, str):
        if issuer_matches(expected, iss, tid):
            return
        wanted: Sequence[str] = (expected,)
    elif any(issuer_matches(each, iss, tid) for each in expected):
        return
    else:
        wanted = expected
    if iss is _ABSENT:
        raise TokenError(f"token lacks iss, which must match {_one_of('issuer', wanted)}", reason="issuer_mismatch")
    raise TokenError(f"token issuer does not match {_one_of('issuer', wanted)}", reason="issuer_mismatch")


def _check_claim_values(claims: Mapping[str, Any], accepted: Mapping[str, Sequence[str]]) -> None:
    """Each listed claim must hold an accepted string; an array matches when any element does, as
    ``aud`` does (RFC 7519 §4.1.3). Values of other types never match: nothing is coerced."""
    for name, values in accepted.items():
        value = claims.get(name, _ABSENT)
        if value is _ABSENT:
            raise TokenError(f"token lacks the required claim {name!r}", reason="missing_claim")
        if isinstance(value, str):
            if value in values:
                continue
        elif isinstance(value, list) and any(isinstance(v, str) and v in values for v in value):
            continue
        raise TokenError(
            f"token claim {name!r} does not hold {_one_of('value', values, accepted=True)}", reason="claim_mismatch"
        )


def _one_of(noun: str, values: Sequence[str], *, accepted: bool = False) -> str:
    """``the expected issuer 'x'`` or ``one of the expected issuers 'x', 'y'``, from configuration."""
    kind = "accepted" if accepted else "expected"
    if not values:
        return f"any {kind} {noun} (none is {kind})"
    if len(values) == 1:
        return f"the {kind} {noun} {describe(values)}"
    return f"one of the {kind} {noun}s {describe(values)}"


def _decode_claims(segment: bytes) -> dict[str, Any]:
    payload = b64url_decode(segment)
    if payload is None:
        raise TokenError("token payload is not base64url", reason="malformed_claims")
    # RFC 7519 §4 lets a parser keep the lexically last of duplicate claim names, which is what
    # msgspec does; the token size cap bounds strings, the shared bound nesting (before msgspec recurses)
    problem = json_problem(payload)
    if problem is not None:
        raise TokenError(f"token payload {problem}", reason="malformed_claims")
    try:
        claims = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise TokenError("token payload is not valid JSON", reason="malformed_claims") from exc
    if not isinstance(claims, dict):
        raise TokenError("token payload is not a JSON object", reason="malformed_claims")
    return claims


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name, _ABSENT)
    if value is _ABSENT:
        return None
    if type(value) is int and -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE:
        return float(value)  # the common case, decided without isinstance chains
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"token {name} is not a number", reason="malformed_claims")
    # range first: math.isfinite() of an int beyond a float's range raises OverflowError
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenError(f"token {name} is not a number", reason="malformed_claims")
    if abs(value) > _MAX_NUMERIC_DATE:
        raise TokenError(f"token {name} is out of range", reason="malformed_claims")
    return float(value)


def _check_audience(aud: object, expected: str | Sequence[str] | None) -> None:
    if aud is _ABSENT:
        values: tuple[str, ...] = ()
    elif isinstance(aud, str):
        values = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        values = tuple(aud)
    else:
        raise TokenError("token aud is not a string or array of strings", reason="malformed_claims")
    if expected is None:
        return
    wanted = (expected,) if isinstance(expected, str) else tuple(expected)
    if not any(a in wanted for a in values):
        what = _one_of("audience", wanted)
        message = (
            f"token lacks aud, which must match {what}" if aud is _ABSENT else f"token audience does not match {what}"
        )
        raise TokenError(message, reason="audience_mismatch")
