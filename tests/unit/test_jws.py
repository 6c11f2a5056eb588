"""Compact JWS parsing, signature verification and claim checks.

Positive tokens are minted by two other implementations (joserfc and PyJWT), so a shared
misreading of RFC 7515/7518 between our signer and our verifier cannot hide.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt as josejwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from jwks_cache._errors import TokenError
from jwks_cache._jose._jwks import ALLOWED_DEFAULT, KeyEntry, KeyTable, parse_jwks
from jwks_cache._jose._jws import ParsedJws, check_alg, check_claims, parse_jws, verify_signature

NOW = 1_700_000_000.0
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


@functools.cache
def private_key(kind: str) -> PrivateKey:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind.startswith("P-"):
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[kind[:5]]
        return ec.generate_private_key(curve)
    if kind.startswith("Ed448"):
        return ed448.Ed448PrivateKey.generate()
    return ed25519.Ed25519PrivateKey.generate()


def joserfc_key(kind: str) -> RSAKey | ECKey | OKPKey:
    key = private_key(kind)
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(key)
    return OKPKey.import_key(key)


def public_jwk(kind: str, **members: Any) -> dict[str, Any]:
    return {**joserfc_key(kind).as_dict(private=False), "kid": kind, **members}


@functools.cache
def table() -> KeyTable:
    kinds = ["rsa", "P-256", "P-384", "P-521", "Ed25519", "Ed448"]
    return parse_jwks(json.dumps({"keys": [public_jwk(k) for k in kinds]}).encode(), url="https://idp")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any] | bytes, sign: Any = None) -> str:
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    signature = sign(signing_input.encode()) if sign is not None else b"\0" * 64
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "iss": "https://idp", "aud": "api", "exp": NOW + 60, "iat": NOW - 5, **extra}


def verify(token: str | bytes, **kwargs: Any) -> dict[str, Any]:
    """The whole pipeline the Registry runs: parse, alg policy, key choice, signature, claims."""
    parsed = parse_jws(token)
    check_alg(parsed.alg, kwargs.pop("allowed", ALLOWED_DEFAULT))
    keys = table().candidates(parsed.kid, parsed.alg)
    if not any(verify_signature(parsed, entry) for entry in keys):
        raise TokenError("bad signature", reason="bad_signature")
    options: dict[str, Any] = {"now": NOW, "leeway": 0.0, "audience": "api", "issuer": "https://idp"} | kwargs
    return check_claims(parsed, **options)


def reason(token: str | bytes, **kwargs: Any) -> str:
    with pytest.raises(TokenError) as info:
        verify(token, **kwargs)
    return info.value.reason


# --- positive round trips -------------------------------------------------------------------------

ROUND_TRIPS = [
    ("RS256", "rsa"),
    ("RS384", "rsa"),
    ("RS512", "rsa"),
    ("PS256", "rsa"),
    ("PS384", "rsa"),
    ("PS512", "rsa"),
    ("ES256", "P-256"),
    ("ES384", "P-384"),
    ("ES512", "P-521"),
    ("EdDSA", "Ed25519"),
]


@pytest.mark.parametrize(
    ("alg", "kind"), [*ROUND_TRIPS, ("EdDSA", "Ed448"), ("Ed25519", "Ed25519"), ("Ed448", "Ed448")]
)
def test_joserfc_tokens_verify(alg: str, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc deprecates "EdDSA" (RFC 9864)
        token = josejwt.encode({"alg": alg, "kid": kind}, claims(), joserfc_key(kind), algorithms=[alg])
    assert verify(token)["sub"] == "alice"
    assert verify(token.encode())["sub"] == "alice"


@pytest.mark.parametrize(("alg", "kind"), ROUND_TRIPS)
def test_pyjwt_tokens_verify(alg: str, kind: str) -> None:
    token = pyjwt.encode(claims(), private_key(kind), algorithm=alg, headers={"kid": kind})
    assert verify(token)["aud"] == "api"


@pytest.mark.parametrize(("alg", "kind"), ROUND_TRIPS)
def test_kidless_tokens_verify_against_fitting_keys(alg: str, kind: str) -> None:
    token = pyjwt.encode(claims(), private_key(kind), algorithm=alg)
    parsed = parse_jws(token)
    assert parsed.kid is None
    assert any(verify_signature(parsed, e) for e in table().candidates(None, alg))


# --- signatures -----------------------------------------------------------------------------


def test_tampered_payload_fails() -> None:
    token = pyjwt.encode(claims(), private_key("rsa"), algorithm="RS256", headers={"kid": "rsa"})
    header, _, signature = token.split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{signature}"
    assert reason(forged) == "bad_signature"


def test_rs256_token_pointing_at_ec_key_fails() -> None:
    token = pyjwt.encode(claims(), private_key("rsa"), algorithm="RS256", headers={"kid": "P-256"})
    parsed = parse_jws(token)
    assert table().candidates("P-256", "RS256") == ()
    assert verify_signature(parsed, table().by_kid["P-256"]) is False
    assert reason(token) == "bad_signature"


def test_pkcs1_signature_does_not_pass_as_pss() -> None:
    token = pyjwt.encode(claims(), private_key("rsa"), algorithm="RS256", headers={"kid": "rsa"})
    _, payload, signature = token.split(".")
    relabelled = f"{b64(json.dumps({'alg': 'PS256', 'kid': 'rsa'}).encode())}.{payload}.{signature}"
    assert reason(relabelled) == "bad_signature"


def test_es256_signature_of_wrong_length_fails() -> None:
    key = private_key("P-256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    def der_sign(data: bytes) -> bytes:  # DER instead of raw r||s: a classic interop bug
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def padded_sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(der_sign(data))
        return b"\0" + r.to_bytes(32) + s.to_bytes(32)

    def raw_sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(der_sign(data))
        return r.to_bytes(32) + s.to_bytes(32)

    header = {"alg": "ES256", "kid": "P-256"}
    assert reason(compact(header, claims(), der_sign)) == "bad_signature"
    assert reason(compact(header, claims(), padded_sign)) == "bad_signature"
    assert verify(compact(header, claims(), raw_sign))["sub"] == "alice"


#: the order n of P-256 (SEC 2 §2.4.2, FIPS 186-4 D.1.2.3)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: the order L of Ed25519's base point (RFC 8032 §5.1)
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def _resigned(token: str, change: Any) -> str:
    """``token`` with its signature bytes replaced by ``change(signature)``."""
    signing_input, signature = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{signing_input}.{b64(change(raw))}"


def test_es256_signature_with_s_replaced_by_n_minus_s_still_verifies() -> None:
    """ECDSA is malleable and jwks-cache accepts both forms, as docs/security.md says.

    High-S signatures are ordinary output of common signers, so refusing them would refuse real
    tokens; a replay cache must therefore key on jti or on the signing input, never on the token
    string. If this test starts failing, verify() began refusing one form: update the docs too.
    """
    token = pyjwt.encode(claims(), private_key("P-256"), algorithm="ES256", headers={"kid": "P-256"})

    def negate_s(raw: bytes) -> bytes:
        s = int.from_bytes(raw[32:])
        return raw[:32] + (P256_ORDER - s).to_bytes(32)

    twin = _resigned(token, negate_s)
    assert twin != token
    assert verify(twin) == verify(token)
    # what the docs tell a replay cache to key on: the signing input, identical in both strings
    assert parse_jws(twin).signing_input == parse_jws(token).signing_input


@pytest.mark.parametrize(
    ("alg", "kind", "order"),
    [("RS256", "rsa", None), ("PS256", "rsa", None), ("EdDSA", "Ed25519", ED25519_ORDER)],
)
def test_other_algorithms_admit_no_second_signature_string(alg: str, kind: str, order: int | None) -> None:
    """The docs' "no" rows: RSA's signature plus the modulus, EdDSA's S plus the group order."""
    token = pyjwt.encode(claims(), private_key(kind), algorithm=alg, headers={"kid": kind})
    assert verify(token)["sub"] == "alice"
    if order is None:  # s + n: the same value modulo n, one byte longer if it overflows the width
        key = private_key(kind)
        assert isinstance(key, rsa.RSAPrivateKey)
        n = key.public_key().public_numbers().n

        def shifted(raw: bytes) -> bytes:
            value = int.from_bytes(raw) + n
            return value.to_bytes(max(len(raw), (value.bit_length() + 7) // 8))
    else:  # S + L, which fits S's 32 little-endian bytes

        def shifted(raw: bytes) -> bytes:
            return raw[:32] + (int.from_bytes(raw[32:], "little") + order).to_bytes(32, "little")

    assert reason(_resigned(token, shifted)) == "bad_signature"


def test_signature_from_another_key_of_the_same_type_fails() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    token = compact({"alg": "EdDSA", "kid": "Ed25519"}, claims(), other.sign)
    assert reason(token) == "bad_signature"


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c"])
def test_header_key_references_are_never_used(member: str) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = ECKey.import_key(attacker).as_dict(private=False)
    values = {"jku": "https://evil.example/jwks", "x5u": "https://evil.example/c", "jwk": attacker_jwk, "x5c": ["MIIB"]}

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(attacker.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32) + s.to_bytes(32)

    for kid in ("P-256", None):
        header = {"alg": "ES256", member: values[member]} | ({"kid": kid} if kid else {})
        assert reason(compact(header, claims(), sign)) == "bad_signature"


def test_verify_signature_refuses_unfit_key_even_if_called_directly() -> None:
    token = pyjwt.encode(claims(), private_key("Ed448"), algorithm="EdDSA", headers={"kid": "Ed448"})
    entry: KeyEntry = table().by_kid["Ed448"]
    assert verify_signature(parse_jws(token), entry) is True
    relabelled = parse_jws(token)
    relabelled.alg = "Ed25519"  # Ed25519 names one curve only
    assert verify_signature(relabelled, entry) is False


@pytest.mark.parametrize(("alg", "kind"), [("Ed25519", "Ed448"), ("Ed448", "Ed25519")])
def test_fully_specified_eddsa_names_bind_the_curve(alg: str, kind: str) -> None:
    """RFC 9864: an Ed448 token is never checked against an Ed25519 key, nor the reverse."""
    signer = private_key(kind)
    assert isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    assert reason(compact({"alg": alg, "kid": kind}, claims(), signer.sign)) == "bad_signature"
    assert reason(compact({"alg": alg}, claims(), signer.sign)) == "bad_signature"  # no kid: no key fits
    assert verify(compact({"alg": kind, "kid": kind}, claims(), signer.sign))["sub"] == "alice"


# --- algorithm policy -------------------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    token = compact({"alg": "none", "kid": "rsa"}, claims(), lambda _: b"")
    assert reason(token) == "alg_not_allowed"
    assert reason(token.rsplit(".", 1)[0] + ".") == "alg_not_allowed"
    assert reason(compact({"alg": "None"}, claims())) == "alg_not_allowed"


def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    public_pem = (
        private_key("rsa")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = compact(
        {"alg": "HS256", "kid": "rsa"}, claims(), lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()
    )
    assert reason(token) == "alg_not_allowed"
    with pytest.raises(TokenError) as info:
        check_alg("HS256", {"HS256", "RS256"})  # even a misconfigured allow-list cannot enable HMAC
    assert info.value.reason == "alg_not_allowed"


def test_allow_list_is_exact() -> None:
    token = pyjwt.encode(claims(), private_key("rsa"), algorithm="RS256", headers={"kid": "rsa"})
    assert reason(token, allowed={"ES256"}) == "alg_not_allowed"
    assert verify(token, allowed={"RS256"})["sub"] == "alice"
    with pytest.raises(TokenError):
        check_alg("Ed25519", {"EdDSA"})


@pytest.mark.parametrize("crit", [["exp"], [], ["b64"], "x"])
def test_crit_is_refused(crit: object) -> None:
    assert reason(compact({"alg": "RS256", "kid": "rsa", "crit": crit, "exp": 1}, claims())) == "crit_unsupported"


@pytest.mark.parametrize("b64_value", [False, 0, None, "false"])
def test_unencoded_payload_is_refused(b64_value: object) -> None:
    assert reason(compact({"alg": "RS256", "b64": b64_value}, claims())) == "unsupported_header"


def test_b64_true_is_the_default() -> None:
    key = private_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    token = compact(
        {"alg": "RS256", "kid": "rsa", "b64": True},
        claims(),
        lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )
    assert verify(token)["sub"] == "alice"


# --- token shape ----------------------------------------------------------------------------


def test_ten_megabyte_token_is_refused_before_decoding() -> None:
    huge = "e" * (10 * 1024 * 1024)
    started = time.perf_counter()
    for token in (huge, huge.encode(), f"{huge}.{huge}.{huge}"):
        with pytest.raises(TokenError) as info:
            parse_jws(token)
        assert info.value.reason == "token_too_large"
    assert time.perf_counter() - started < 1.0  # generous: the check is a length comparison
    with pytest.raises(TokenError, match="longer than 10 bytes"):
        parse_jws("eyJhbGciOiJSUzI1NiJ9.e30.AA", max_token_bytes=10)


GOOD_HEADER = b64(json.dumps({"alg": "RS256", "kid": "rsa"}).encode())
DUP_ALG_HEADER = b64(b'{"alg":"RS256","alg":"none"}')
DUP_KID_HEADER = b64(b'{"alg":"RS256","kid":"a","kid":"b"}')


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        f"{GOOD_HEADER}.e30",
        f"{GOOD_HEADER}.e30.AA.AA",
        f"{GOOD_HEADER}=.e30.AA",
        f"{GOOD_HEADER}.e30.AA==",
        f"{GOOD_HEADER}.e30.A+/A",
        f"{GOOD_HEADER}.e3 0.AA",
        f" {GOOD_HEADER}.e30.AA",
        f"{GOOD_HEADER}.e30.AA\n",
        f"{GOOD_HEADER}.e30.A",  # 4n+1 characters cannot be base64
        f"{GOOD_HEADER}.e30.AB",  # non-canonical: trailing bits set
        f"{GOOD_HEADER}.é.AA",
        ".e30.AA",
        f"{b64(b'[]')}.e30.AA",
        f"{b64(b'not json')}.e30.AA",
        f"{DUP_ALG_HEADER}.e30.AA",
        f"{DUP_KID_HEADER}.e30.AA",
        f"{b64(json.dumps({'alg': 256}).encode())}.e30.AA",
        f"{b64(json.dumps({'kid': 'rsa'}).encode())}.e30.AA",
        f"{b64(json.dumps({'alg': 'RS256', 'kid': 7}).encode())}.e30.AA",
        f"{b64(json.dumps({'alg': 'RS256', 'kid': None}).encode())}.e30.AA",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenError) as info:
        parse_jws(token)
    assert info.value.reason == "malformed"


def test_non_text_token_is_malformed() -> None:
    with pytest.raises(TokenError) as info:
        parse_jws(12345)  # type: ignore[arg-type]
    assert info.value.reason == "malformed"


def test_parsed_token_exposes_header_and_segments() -> None:
    token = pyjwt.encode(claims(), private_key("rsa"), algorithm="RS256", headers={"kid": "rsa", "typ": "at+jwt"})
    parsed = parse_jws(token)
    header, payload, _ = token.split(".")
    assert isinstance(parsed, ParsedJws)
    assert (parsed.alg, parsed.kid, parsed.header["typ"]) == ("RS256", "rsa", "at+jwt")
    assert parsed.signing_input == f"{header}.{payload}".encode()
    assert parsed.payload_segment == payload.encode()
    assert len(parsed.signature) == 256
    assert "alice" not in repr(parsed)


# --- claims ---------------------------------------------------------------------------------


def signed(claims_: dict[str, Any] | bytes) -> str:
    key = private_key("Ed25519")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return compact({"alg": "EdDSA", "kid": "Ed25519"}, claims_, key.sign)


@pytest.mark.parametrize(
    ("overrides", "kwargs", "expected"),
    [
        ({"exp": NOW}, {}, "expired"),
        ({"exp": NOW - 10}, {"leeway": 10.0}, "expired"),
        ({"exp": NOW - 10}, {"leeway": 10.5}, None),
        ({"exp": NOW + 0.5}, {}, None),
        ({"nbf": NOW + 1}, {}, "not_yet_valid"),
        ({"nbf": NOW + 1}, {"leeway": 1.0}, None),
        ({"nbf": NOW}, {}, None),
        ({"iat": NOW + 30}, {}, "issued_in_future"),
        ({"iat": NOW + 30}, {"leeway": 30.0}, None),
        ({"aud": "other"}, {}, "audience_mismatch"),
        ({"aud": ["other", "api"]}, {}, None),
        ({"aud": []}, {}, "audience_mismatch"),
        ({"aud": "other"}, {"audience": ["x", "other"]}, None),
        ({"aud": "other"}, {"audience": None}, None),
        ({"aud": "other"}, {"audience": []}, "audience_mismatch"),
        ({"iss": "https://evil"}, {}, "issuer_mismatch"),
        ({"iss": "https://evil"}, {"issuer": None}, None),
        ({"exp": "tomorrow"}, {}, "malformed_claims"),
        ({"exp": True}, {}, "malformed_claims"),
        ({"exp": None}, {}, "malformed_claims"),
        ({"exp": 2**60}, {}, "malformed_claims"),
        ({"exp": 10**400}, {}, "malformed_claims"),  # beyond a float: no OverflowError may escape
        ({"nbf": -(10**400)}, {}, "malformed_claims"),
        ({"iat": 10**400}, {}, "malformed_claims"),
        ({"nbf": [1]}, {}, "malformed_claims"),
        ({"iat": {"t": 1}}, {}, "malformed_claims"),
        ({"aud": 7}, {"audience": None}, "malformed_claims"),
        ({"aud": ["api", 7]}, {}, "malformed_claims"),
        ({"aud": None}, {}, "malformed_claims"),
        ({"iss": 7}, {"issuer": None}, "malformed_claims"),
        ({}, {"now": float("nan")}, "expired"),
        ({}, {"leeway": float("nan")}, "expired"),
    ],
)
def test_claim_rules(overrides: dict[str, Any], kwargs: dict[str, Any], expected: str | None) -> None:
    token = signed(claims(**overrides))
    if expected is None:
        assert verify(token, **kwargs)["sub"] == "alice"
    else:
        assert reason(token, **kwargs) == expected


def test_missing_claims_fail_only_when_expected() -> None:
    token = signed({"sub": "alice"})
    assert verify(token, audience=None, issuer=None) == {"sub": "alice"}
    assert reason(token, issuer=None) == "audience_mismatch"
    assert reason(token, audience=None) == "issuer_mismatch"


def test_required_claims_must_be_present_whatever_their_value() -> None:
    token = signed({"sub": "alice", "iat": NOW - 10})
    assert verify(token, audience=None, issuer=None, required=("sub", "iat"))["sub"] == "alice"
    with pytest.raises(TokenError) as info:
        verify(token, audience=None, issuer=None, required=("sub", "exp"))
    assert info.value.reason == "missing_claim"
    assert str(info.value) == "token lacks the required claim 'exp'"


@pytest.mark.parametrize("payload", [b"[]", b"null", b"not json", b"\xff", b"", b"[" * 5000])
def test_payload_must_be_one_json_object(payload: bytes) -> None:
    assert reason(signed(payload), audience=None, issuer=None) == "malformed_claims"


def test_duplicate_claim_names_keep_the_lexically_last_as_rfc_7519_allows() -> None:
    """RFC 7519 §4: reject, or keep the lexically last; we keep the last (msgspec), cheaply."""
    assert verify(signed(b'{"sub":"a","sub":"b"}'), audience=None, issuer=None) == {"sub": "b"}


def test_payload_with_bad_base64_is_malformed_claims() -> None:
    key = private_key("Ed25519")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    header = b64(json.dumps({"alg": "EdDSA", "kid": "Ed25519"}).encode())
    signing_input = f"{header}.e30B"  # 4n+1 characters
    token = f"{signing_input}.{b64(key.sign(signing_input.encode()))}"
    assert reason(token, audience=None, issuer=None) == "malformed_claims"


def test_errors_never_quote_claims_or_token() -> None:
    secret = "s3cr3t-subject"
    for overrides in ({"exp": NOW - 1}, {"aud": secret}, {"iss": secret}, {"exp": secret}):
        token = signed(claims(sub=secret, **overrides))
        with pytest.raises(TokenError) as info:
            verify(token)
        assert secret not in str(info.value)
        assert token not in str(info.value)
        assert not info.value.args[1:]
