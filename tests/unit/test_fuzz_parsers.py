"""Hostile input never escapes as anything but our own errors.

Whatever an IdP serves or a client sends, parse_jwks raises only InvalidJwksError and the token
functions only TokenError (no msgspec, json, binascii, joserfc or cryptography exceptions, no
RecursionError, no warnings: the test config turns warnings into errors); deep nesting is refused
by every parser with its own error.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from jwks_cache._asgi._fields import decode_registration
from jwks_cache._asgi._plumbing import HttpProblem
from jwks_cache._errors import InvalidJwksError, StoreError, TokenError
from jwks_cache._jose._jwks import KeyTable, parse_jwks
from jwks_cache._jose._jws import ParsedJws, check_alg, check_claims, parse_jws, verify_signature
from jwks_cache._jose._nesting import MAX_DEPTH, TOO_DEEP, json_problem, msgpack_problem
from jwks_cache._runtime._refresh import parse_discovery
from jwks_cache._stores._codec import decode, decode_notice

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
FUZZ = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@functools.cache
def real_jwks() -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        keys: list[RSAKey | ECKey | OKPKey] = [
            RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            ECKey.import_key(ec.generate_private_key(ec.SECP256R1())),
            ECKey.import_key(ec.generate_private_key(ec.SECP521R1())),
            OKPKey.import_key(ed25519.Ed25519PrivateKey.generate()),
        ]
    return [k.as_dict(private=False) for k in keys] + [k.as_dict(private=True) for k in keys[:3]]


@functools.cache
def table() -> KeyTable:
    good = [jwk for jwk in real_jwks() if "d" not in jwk]
    return parse_jwks(json.dumps({"keys": good}).encode(), url="https://idp")


def outcome(call: Callable[[], T], error: type[E]) -> T | E:
    try:
        return call()
    except error as exc:
        return exc


def try_jwks(body: bytes, max_keys: int = 100) -> None:
    result = outcome(lambda: parse_jwks(body, url="https://idp", max_keys=max_keys), InvalidJwksError)
    if isinstance(result, InvalidJwksError):
        assert result.url == "https://idp"
        assert str(result).startswith("$")
        return
    assert result.entries
    assert all(e.kid is None or e.kid in result.by_kid for e in result.entries)
    for jwk in result.public_jwks()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(jwk)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)

MEMBERS = ["kty", "kid", "use", "key_ops", "alg", "crv", "n", "e", "x", "y", "d", "k", "x5c", "x5u", "x5t", "oth"]
member_values = st.one_of(
    st.sampled_from(["RSA", "EC", "OKP", "oct", "sig", "enc", "P-256", "P-384", "P-521", "Ed25519", "Ed448"]),
    st.sampled_from(["X25519", "secp256k1", "RS256", "PS512", "ES256", "ES512", "EdDSA", "HS256", "none", ""]),
    st.lists(st.sampled_from(["verify", "sign", "encrypt"]), max_size=3),
    st.binary(max_size=300).map(b64),
    st.sampled_from(["AQAB", "AQAB=", "AQ+B", "////", "A"]),
    json_scalars,
)


@st.composite
def jwk_like(draw: st.DrawFn) -> Any:
    base = dict(draw(st.sampled_from(real_jwks())))
    if draw(st.booleans()):
        base = {}
    for name in draw(st.lists(st.sampled_from(MEMBERS), max_size=5)):
        if draw(st.booleans()):
            base.pop(name, None)
        else:
            base[name] = draw(member_values)
    return base if draw(st.integers(0, 9)) else draw(json_values)


@FUZZ
@given(st.binary(max_size=2000))
def test_parse_jwks_arbitrary_bytes(body: bytes) -> None:
    try_jwks(body)


@FUZZ
@given(json_values)
def test_parse_jwks_arbitrary_json(doc: Any) -> None:
    try_jwks(json.dumps(doc).encode())
    try_jwks(json.dumps({"keys": doc}).encode())


@FUZZ
@given(st.lists(jwk_like(), max_size=6), st.integers(1, 6))
def test_parse_jwks_jwk_shaped(keys: list[Any], max_keys: int) -> None:
    try_jwks(json.dumps({"keys": keys}).encode(), max_keys=max_keys)


@FUZZ
@given(st.data())
def test_parse_jwks_mutated_real_set(data: st.DataObject) -> None:
    body = bytearray(json.dumps({"keys": real_jwks()}).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            body[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del body[at]
        else:
            body[at:at] = data.draw(st.sampled_from([b'"', b",", b"{", b"[", b"\\", b'"kid":1,', b"\xc3"]))
    try_jwks(bytes(body))


# --- tokens --------------------------------------------------------------------------------


CLAIM_REASONS = {
    "malformed_claims",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "audience_mismatch",
    "issuer_mismatch",
}


def exercise_token(token: str | bytes, *, now: float = 1e9, leeway: float = 0.0, audience: Any = "api") -> None:
    parsed = outcome(lambda: parse_jws(token), TokenError)
    if isinstance(parsed, TokenError):
        return
    assert isinstance(parsed, ParsedJws)
    for entry in table().entries:
        assert verify_signature(parsed, entry) in (True, False)
    for allowed in (frozenset({"RS256"}), frozenset({"HS256", "none", parsed.alg})):
        refused = outcome(lambda: check_alg(parsed.alg, allowed), TokenError)  # noqa: B023
        assert refused is None or refused.reason == "alg_not_allowed"
    claims = outcome(
        lambda: check_claims(parsed, now=now, leeway=leeway, audience=audience, issuer="https://idp"), TokenError
    )
    assert isinstance(claims, dict) or claims.reason in CLAIM_REASONS


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_parse_jws_arbitrary_input(token: str | bytes) -> None:
    exercise_token(token)


headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "PS384", "ES256", "ES512", "EdDSA", "Ed25519", "HS256", "none"]) | json_scalars},
    optional={
        "kid": st.sampled_from([None, 1, "x"]) | st.text(max_size=5),
        "crit": json_values,
        "b64": json_values,
        "jku": st.text(max_size=10),
        "typ": json_scalars,
    },
)
claim_sets = st.fixed_dictionaries(
    {},
    optional={
        "exp": json_scalars | st.integers(-(2**70), 2**70),
        "nbf": json_scalars,
        "iat": json_scalars,
        "aud": json_values,
        "iss": st.sampled_from(["https://idp"]) | json_scalars,
        "sub": json_values,
    },
)
floats = st.floats() | st.integers(-(2**40), 2**40).map(float)
audiences = st.none() | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | st.just("api")


@FUZZ
@given(
    headers | json_values,
    claim_sets | json_values,
    st.binary(max_size=140),
    floats,
    floats,
    audiences,
)
def test_structured_tokens(
    header: Any, claims: Any, signature: bytes, now: float, leeway: float, audience: Any
) -> None:
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"
    exercise_token(token, now=now, leeway=leeway, audience=audience)
    if math.isnan(now) or math.isnan(leeway):  # NaN must fail closed, never skip a time check
        result = outcome(
            lambda: check_claims(parse_jws(token), now=now, leeway=leeway, audience=None, issuer=None), TokenError
        )
        if not isinstance(result, TokenError):
            assert not isinstance(claims, dict) or not {"exp", "nbf", "iat"} & set(claims)


@FUZZ
@given(st.data())
def test_mutated_real_token(data: st.DataObject) -> None:
    header = b64(json.dumps({"alg": "ES256", "kid": "x"}).encode())
    payload = b64(json.dumps({"exp": 2e9, "aud": "api", "iss": "https://idp"}).encode())
    token = bytearray(f"{header}.{payload}.{b64(bytes(64))}".encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(token) - 1))
        token[at] = data.draw(st.sampled_from(b"A_-.=+/ \x00\xffe"))
    exercise_token(bytes(token))


# --- nesting -------------------------------------------------------------------------------
# Deep nesting anywhere (mostly in members the parser does not know) is refused with the parser's
# own error before any decoder recurses, and the scans agree with the depth a decoder would build.


def depth_of(value: Any) -> int:
    """Arrays/objects open at the deepest point of ``value`` (iteratively: values may be deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


tricky_text = st.text(alphabet='[]{}"\\:,ab\u005b', max_size=8)
tree_values = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | tricky_text
    | st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


@FUZZ
@given(tree_values, st.integers(0, 8))
def test_json_scan_agrees_with_the_tree(value: Any, bound: int) -> None:
    document = json.dumps(value).encode()
    assert (json_problem(document, bound) is None) == (depth_of(value) <= bound)
    assert (json_problem(json.dumps(value, ensure_ascii=False), bound) is None) == (depth_of(value) <= bound)


@FUZZ
@given(tree_values | st.recursive(st.binary(max_size=40), lambda inner: st.lists(inner, max_size=3)), st.integers(0, 8))
def test_msgpack_scan_agrees_with_the_tree(value: Any, bound: int) -> None:
    assert (msgpack_problem(msgspec.msgpack.encode(value), bound) is None) == (depth_of(value) <= bound)


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """A JSON value nesting MAX_DEPTH + 1 to 3,000 arrays/objects, with decoys in strings, maybe truncated."""
    depth = draw(st.integers(MAX_DEPTH + 1, 3_000))
    pattern = draw(
        st.lists(st.sampled_from([b"[", b'{"k":', b'["[{\\"",', b'{"}":"\\\\",":":']), min_size=1, max_size=4)
    )
    closers = {b"[": b"]", b'{"k":': b"}", b'["[{\\"",': b"]", b'{"}":"\\\\",":":': b"}"}
    levels = [pattern[i % len(pattern)] for i in range(depth)]
    leaf = json.dumps(draw(json_scalars)).encode()
    tail = b"".join(closers[level] for level in reversed(levels))
    return b"".join(levels) + leaf + tail[: draw(st.integers(0, len(tail)))]


@st.composite
def deep_member(draw: st.DrawFn, known: dict[str, Any]) -> bytes:
    """``known`` (a valid document) plus an unknown member holding deep nesting."""
    base = json.dumps(known).encode()
    name = draw(st.sampled_from(["x", "unknown", "keys_", "\u2603"]))
    return base[:-1] + b", " + json.dumps(name).encode() + b": " + draw(deep_json()) + b"}"


JWK = {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}


@FUZZ
@given(st.one_of(deep_json(), deep_member({"keys": [JWK]})))
def test_deep_jwks_is_invalid_jwks(body: bytes) -> None:
    refused = outcome(lambda: parse_jwks(body, url="https://idp"), InvalidJwksError)
    assert isinstance(refused, InvalidJwksError) and str(refused) == f"$: {TOO_DEEP}"


@FUZZ
@given(st.one_of(deep_json(), deep_member({"issuer": "https://idp", "jwks_uri": "https://idp/jwks"})))
def test_deep_discovery_is_invalid_jwks(body: bytes) -> None:
    refused = outcome(lambda: parse_discovery(body, url="https://idp/.well-known"), InvalidJwksError)
    assert isinstance(refused, InvalidJwksError) and TOO_DEEP in str(refused)


@FUZZ
@given(st.one_of(deep_json(), deep_member({"alg": "RS256", "kid": "k"})))
def test_deep_jws_header_is_malformed(header: bytes) -> None:
    token = f"{b64(header)}.{b64(b'{}')}.{b64(b'sig')}"
    refused = outcome(lambda: parse_jws(token, max_token_bytes=1 << 20), TokenError)
    assert isinstance(refused, TokenError) and refused.reason == "malformed" and TOO_DEEP in str(refused)


@FUZZ
@given(st.one_of(deep_json(), deep_member({"sub": "a", "aud": ["api"], "exp": 2e9})))
def test_deep_claims_are_malformed_claims(claims: bytes) -> None:
    header = b64(json.dumps({"alg": "RS256"}).encode())
    parsed = parse_jws(f"{header}.{b64(claims)}.{b64(b'sig')}", max_token_bytes=1 << 20)
    refused = outcome(lambda: check_claims(parsed, now=1e9, leeway=0, audience=None, issuer=None), TokenError)
    assert isinstance(refused, TokenError) and refused.reason == "malformed_claims"


@FUZZ
@given(st.one_of(deep_json(), deep_member({"tenant": "acme", "provider": "p", "fetched_at": 1.0})), st.booleans())
def test_deep_notices_are_ignored(notice: bytes, as_text: bool) -> None:
    assert decode_notice(notice.decode("utf-8", "surrogateescape") if as_text else notice, skip_origin="me") is None


@FUZZ
@given(st.one_of(deep_json(), deep_member({"jwks_url": "https://idp/jwks", "labels": {"a": "b"}})))
def test_deep_registration_bodies_are_400(body: bytes) -> None:
    refused = outcome(lambda: decode_registration(body, "acme", "p"), HttpProblem)
    assert isinstance(refused, HttpProblem) and refused.status == 400


@st.composite
def deep_msgpack(draw: st.DrawFn) -> bytes:
    """Arrays and maps (fix and 16/32-bit headers) nesting MAX_DEPTH + 1 to 3,000 deep, maybe truncated."""
    depth = draw(st.integers(MAX_DEPTH + 1, 3_000))
    headers = [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xdf\x00\x00\x00\x01\xc0", b"\x92\xc4\x02\x91\x91"]
    pattern = draw(st.lists(st.sampled_from(headers), min_size=1, max_size=4))
    data = b"".join(pattern[i % len(pattern)] for i in range(depth)) + b"\xc0"
    return data[: len(data) - draw(st.integers(0, 1))]


@FUZZ
@given(deep_msgpack(), st.sampled_from(["extra", "body", "tenant"]))
def test_deep_snapshots_are_store_errors(deep: bytes, field: str) -> None:
    plain = msgspec.msgpack.encode({"tenant": "acme", "provider": "p", "jwks_url": "https://idp/jwks", "body": b"{}"})
    data = bytes([plain[0] + 1]) + plain[1:] + msgspec.msgpack.encode(field) + deep
    refused = outcome(lambda: decode(data, None, source="s"), StoreError)
    assert isinstance(refused, StoreError) and TOO_DEEP in str(refused)
