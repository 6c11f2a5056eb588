"""JWKS parsing and key hygiene: what a JWK Set must look like, and which keys are never served."""

from __future__ import annotations

import base64
import functools
import json
import warnings
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from tests import eddsa_vectors as vectors

from jwks_cache._asgi._openapi import openapi_document
from jwks_cache._config import ASYMMETRIC_ALGORITHMS
from jwks_cache._errors import FetchError, InvalidJwksError
from jwks_cache._jose._jwks import _ALG_KEYS, ALLOWED_DEFAULT, KeyTable, key_fits_alg, parse_jwks
from jwks_cache._jose._jws import parse_jws, verify_signature
from jwks_cache.testing import SUPPORTED_ALGORITHMS

URL = "https://idp.example/jwks"


@functools.cache
def rsa_private(bits: int = 2048, n: int = 0) -> RSAKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc frowns on the 1024-bit key we need
        return RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def ec_private(crv: str, n: int = 0) -> ECKey:
    return ECKey.generate_key(crv, private=True)


@functools.cache
def okp_private(crv: Literal["Ed25519", "Ed448"]) -> OKPKey:
    return OKPKey.generate_key(crv, private=True)


def pub(key: RSAKey | ECKey | OKPKey, **members: Any) -> dict[str, Any]:
    return {**key.as_dict(private=False), **members}


def body(*jwks: Any, **extra: Any) -> bytes:
    return json.dumps({"keys": list(jwks), **extra}).encode()


def parse(*jwks: Any) -> KeyTable:
    return parse_jwks(body(*jwks), url=URL)


def good(kid: str = "good") -> dict[str, Any]:
    return pub(rsa_private(), kid=kid, use="sig", alg="RS256")


def skip_reason(jwk: dict[str, Any]) -> str:
    table = parse(jwk, good())
    assert table.key_ids == ("good",)
    (skipped,) = table.skipped
    assert skipped.index == 0
    return skipped.reason


# --- a mixed, valid set ------------------------------------------------------------------------


def test_parses_every_supported_key_type() -> None:
    table = parse(
        pub(rsa_private(), kid="rsa", alg="RS256", use="sig"),
        pub(rsa_private(), kid="ps", alg="PS256"),
        pub(ec_private("P-256"), kid="p256", alg="ES256"),
        pub(ec_private("P-384"), kid="p384"),
        pub(ec_private("P-521"), kid="p521", key_ops=["verify"]),
        pub(okp_private("Ed25519"), kid="ed25519", alg="EdDSA"),
        pub(okp_private("Ed448"), kid="ed448"),
    )
    assert table.key_ids == ("rsa", "ps", "p256", "p384", "p521", "ed25519", "ed448")
    assert table.skipped == ()
    by_kid = table.by_kid
    assert isinstance(by_kid["rsa"].verifier, rsa.RSAPublicKey)
    assert isinstance(by_kid["p521"].verifier, ec.EllipticCurvePublicKey)
    assert isinstance(by_kid["ed25519"].verifier, ed25519.Ed25519PublicKey)
    assert isinstance(by_kid["ed448"].verifier, ed448.Ed448PublicKey)
    assert (by_kid["p384"].kty, by_kid["p384"].crv, by_kid["p384"].alg) == ("EC", "P-384", None)
    assert by_kid["rsa"].jwk.kid == "rsa"
    assert not by_kid["rsa"].jwk.is_private
    assert by_kid["rsa"].jwk.as_dict(private=False)["n"] == pub(rsa_private())["n"]


def test_kidless_key_keeps_no_kid_even_after_key_set() -> None:
    table = parse(pub(ec_private("P-256")))
    (entry,) = table.entries
    assert entry.kid is None
    assert table.key_ids == ()
    assert dict(table.by_kid) == {}
    key_set = table.key_set()
    assert isinstance(key_set, KeySet)
    assert key_set.keys[0].kid  # joserfc gives its own twin a thumbprint kid...
    assert entry.jwk.kid is None  # ...which never reaches the served entry
    assert "kid" not in table.public_jwks()["keys"][0]


def test_public_jwks_holds_only_public_known_members_and_is_a_copy() -> None:
    jwk = pub(rsa_private(), kid="a", x5u="https://evil.example/x", custom="x", x5t="abc")
    table = parse(jwk)
    (out,) = table.public_jwks()["keys"]
    assert set(out) == {"kty", "kid", "n", "e", "x5t"}
    out["n"] = "tampered"
    assert table.public_jwks()["keys"][0]["n"] == jwk["n"]
    assert set(table.key_set().as_dict()["keys"][0]) == {"kty", "kid", "n", "e", "x5t"}
    assert "crv" not in parse(pub(rsa_private(), crv="P-256")).public_jwks()["keys"][0]


def test_served_key_objects_share_nothing_with_the_table() -> None:
    table = parse(pub(ec_private("P-256"), kid="a", key_ops=["verify"]))
    for key in (table.entries[0].jwk, table.key_set().keys[0]):
        ops = key.as_dict()["key_ops"]  # as_dict is a shallow copy
        assert isinstance(ops, list)
        ops.append("sign")
    assert table.public_jwks()["keys"][0]["key_ops"] == ["verify"]


def test_table_exposes_immutable_sequences() -> None:
    table = parse(good())
    assert isinstance(table.entries, tuple)
    assert isinstance(table.key_ids, tuple)
    assert isinstance(table.skipped, tuple)


# --- key hygiene: skipped keys -------------------------------------------------------------------


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth"])
def test_rsa_private_members_are_never_served(member: str) -> None:
    jwk = pub(rsa_private(), kid="priv", **{member: "AQAB"})
    assert skip_reason(jwk) == "private key material"


def test_full_private_jwks_are_never_served() -> None:
    table = parse(rsa_private().as_dict(private=True), ec_private("P-256").as_dict(private=True), good())
    assert [s.reason for s in table.skipped] == ["private key material"] * 2


def test_oct_key_is_never_served() -> None:
    assert skip_reason({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}) == "oct key"


def test_small_rsa_key_is_skipped_without_warnings() -> None:
    assert skip_reason(pub(rsa_private(1024), kid="small")) == "rsa key too small (1024 bits)"


def test_duplicate_kids_are_none_of_them_served() -> None:
    table = parse(
        pub(rsa_private(), kid="dup"), pub(ec_private("P-256"), kid="dup"), good(), pub(rsa_private(n=1), kid="dup")
    )
    assert table.key_ids == ("good",)
    assert [(s.index, s.kid, s.reason) for s in table.skipped] == [
        (0, "dup", "duplicate kid"),
        (1, "dup", "duplicate kid"),
        (3, "dup", "duplicate kid"),
    ]


@pytest.mark.parametrize(
    ("crv", "alg"), [("P-384", "ES256"), ("P-256", "ES384"), ("P-256", "ES512"), ("P-521", "ES256")]
)
def test_ec_curve_must_match_declared_alg(crv: str, alg: str) -> None:
    assert skip_reason(pub(ec_private(crv), alg=alg)) == f"curve {crv} does not match alg {alg}"


def test_unknown_kty_is_skipped_beside_good_keys() -> None:
    table = parse({"kty": "PQC", "kid": "future", "pub": "AAAA"}, good("a"), good("b"))
    assert table.key_ids == ("a", "b")
    assert table.skipped[0].reason == 'unsupported kty "PQC"'


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, 'unsupported EC crv "secp256k1"'),
        ({"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}, 'unsupported EC crv "P-192"'),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, 'unsupported OKP crv "X25519"'),
        ({"kty": "OKP", "crv": "X448", "x": "AA", "use": "sig"}, 'unsupported OKP crv "X448"'),
        ({"kty": "OKP", "x": "AA"}, "unsupported OKP crv null"),
        ({"n": "AQAB", "e": "AQAB"}, "unsupported kty null"),
        ({"kty": ["RSA"], "n": "AQAB", "e": "AQAB"}, "unsupported kty list"),  # unhashable: found by fuzzing
        ({"kty": {"RSA": 1}}, "unsupported kty dict"),
        ({"kty": "EC", "crv": ["P-256"], "x": "AA", "y": "AA"}, "unsupported EC crv list"),
    ],
)
def test_unknown_curves_and_types_are_skipped(jwk: dict[str, Any], reason: str) -> None:
    assert skip_reason(jwk) == reason


@pytest.mark.parametrize("use", ["enc", "", "SIG"])
def test_use_other_than_sig_is_skipped(use: str) -> None:
    assert skip_reason(pub(rsa_private(), use=use)).startswith("use is ")


@pytest.mark.parametrize(
    ("ops", "ok"), [(["verify"], True), (["sign", "verify"], True), (["encrypt"], False), ([], False)]
)
def test_key_ops_must_allow_verify(ops: list[str], ok: bool) -> None:
    table = parse(pub(ec_private("P-256"), kid="k", key_ops=ops), good())
    assert ("k" in table.by_kid) is ok
    if not ok:
        assert table.skipped[0].reason == 'key_ops lacks "verify"'


@pytest.mark.parametrize("alg", ["HS256", "none", "RSA-OAEP", "ES256K", 256])
def test_alg_must_be_an_asymmetric_jws_alg(alg: object) -> None:
    assert "is not an asymmetric JWS alg" in skip_reason(pub(rsa_private(), alg=alg))


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (lambda: rsa_private(), "ES256"),
        (lambda: ec_private("P-256"), "RS256"),
        (lambda: okp_private("Ed25519"), "PS256"),
    ],
)
def test_alg_must_fit_the_key_type(key: Any, alg: str) -> None:
    assert "does not fit" in skip_reason(pub(key(), alg=alg))


def test_ed448_key_cannot_declare_ed25519() -> None:
    assert skip_reason(pub(okp_private("Ed448"), alg="Ed25519")) == "curve Ed448 does not match alg Ed25519"
    assert skip_reason(pub(okp_private("Ed25519"), alg="Ed448")) == "curve Ed25519 does not match alg Ed448"


def test_ed448_key_declaring_ed448_is_served() -> None:
    table = parse(pub(okp_private("Ed448"), kid="ed448", alg="Ed448"))
    assert table.key_ids == ("ed448",)
    assert isinstance(table.by_kid["ed448"].verifier, ed448.Ed448PublicKey)


def test_point_not_on_curve_is_skipped() -> None:
    jwk = pub(ec_private("P-256"))
    jwk["y"] = jwk["x"]
    assert skip_reason(jwk) == "invalid EC key (ValueError)"


def test_wrong_length_okp_key_is_skipped() -> None:
    assert skip_reason({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}).startswith("invalid OKP key")


def okp(crv: str, x_hex: str, **members: Any) -> dict[str, Any]:
    x = base64.urlsafe_b64encode(bytes.fromhex(x_hex)).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": crv, "x": x, **members}


SMALL_ORDER = "x is a small-order {} point"
NON_CANONICAL = "x is not the canonical encoding of an {} point"


@pytest.mark.parametrize(
    ("crv", "x_hex", "reason"),
    [
        *(("Ed25519", x, SMALL_ORDER) for x in vectors.ED25519_SMALL_ORDER),
        *(("Ed25519", x, NON_CANONICAL) for x in vectors.ED25519_NON_CANONICAL),
        *(("Ed448", x, SMALL_ORDER) for x in vectors.ED448_SMALL_ORDER),
        *(("Ed448", x, NON_CANONICAL) for x in vectors.ED448_NON_CANONICAL),
    ],
    ids=lambda value: value[:16] if isinstance(value, str) and len(value) > 16 else None,
)
def test_small_order_and_non_canonical_eddsa_keys_are_skipped(crv: str, x_hex: str, reason: str) -> None:
    """Under a small-order key anyone signs (R = identity, S = 0), so such a key is never served."""
    for alg in (None, "EdDSA"):
        jwk = okp(crv, x_hex, kid="forgeable", **({"alg": alg} if alg else {}))
        assert skip_reason(jwk) == reason.format(crv)


@pytest.mark.parametrize(
    ("crv", "x_hex"),
    [
        ("Ed25519", vectors.RFC8032_TEST1),
        ("Ed25519", vectors.WYCHEPROOF_ED25519),
        ("Ed448", vectors.RFC8032_ED448_BLANK),
        ("Ed448", vectors.WYCHEPROOF_ED448),
    ],
)
def test_published_eddsa_test_keys_are_served(crv: str, x_hex: str) -> None:
    table = parse(okp(crv, x_hex, kid="k"))
    assert table.key_ids == ("k",)
    assert table.skipped == ()


@pytest.mark.parametrize(
    ("crv", "x_hex", "signature_hex"),
    [
        ("Ed25519", vectors.WYCHEPROOF_ED25519, vectors.WYCHEPROOF_ED25519_TC1_SIG),
        ("Ed448", vectors.WYCHEPROOF_ED448, vectors.WYCHEPROOF_ED448_TC1_SIG),
    ],
)
def test_served_wycheproof_keys_verify_their_valid_signature(crv: str, x_hex: str, signature_hex: str) -> None:
    verifier = parse(okp(crv, x_hex, kid="k")).by_kid["k"].verifier
    assert isinstance(verifier, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    verifier.verify(bytes.fromhex(signature_hex), b"")  # tcId 1: the empty message


def test_rfc_8037_example_key_is_served_and_its_example_jws_verifies() -> None:
    (entry,) = parse(okp("Ed25519", vectors.RFC8032_TEST1, kid="rfc8037")).entries
    parsed = parse_jws(vectors.RFC8037_JWS)
    assert verify_signature(parsed, entry)
    forged = parse_jws(vectors.RFC8037_JWS[:-4] + "AAAA")
    assert not verify_signature(forged, entry)


def test_a_set_whose_only_key_is_small_order_has_no_usable_keys() -> None:
    with pytest.raises(InvalidJwksError) as info:
        parse(okp("Ed25519", vectors.LIBSODIUM_BLOCKLIST[1], kid="identity"))
    assert str(info.value) == "$.keys: no usable keys (1 skipped: [0] x is a small-order Ed25519 point)"


def test_small_order_key_is_skipped_alone() -> None:
    table = parse(
        okp("Ed448", vectors.ED448_SMALL_ORDER[4], kid="order-4"),
        pub(okp_private("Ed25519"), kid="ed25519"),
        okp("Ed25519", vectors.ED25519_NON_CANONICAL[0], kid="p"),
        good(),
    )
    assert table.key_ids == ("ed25519", "good")
    assert [(s.index, s.kid, s.reason) for s in table.skipped] == [
        (0, "order-4", "x is a small-order Ed448 point"),
        (2, "p", "x is not the canonical encoding of an Ed25519 point"),
    ]


@pytest.mark.parametrize("kid", [1, None, ["a"], {"a": 1}, True])
def test_non_string_kid_is_skipped(kid: object) -> None:
    assert skip_reason(pub(rsa_private(), kid=kid)) == "non-string kid"


@pytest.mark.parametrize(
    ("member", "reason"), [("use", "use is null"), ("alg", "alg null is not"), ("crv", "unsupported")]
)
def test_null_members_are_malformed_not_absent(member: str, reason: str) -> None:
    assert skip_reason(pub(ec_private("P-256"), **{member: None})).startswith(reason)


@pytest.mark.parametrize("n", ["AQAB=", "AQ AB", "AQ+B", "", None, 65537, "é"])
def test_key_material_must_be_strict_base64url(n: object) -> None:
    assert skip_reason({**pub(rsa_private()), "n": n}) == "n is missing or not base64url"


@pytest.mark.parametrize("element", [[], "key", 1, None])
def test_non_object_key_is_skipped(element: object) -> None:
    assert skip_reason(element) == "not a JSON object"  # type: ignore[arg-type]


def test_too_large_rsa_key_is_skipped() -> None:
    jwk = {**pub(rsa_private()), "n": "_" * 2800}  # ~16800 bits
    assert skip_reason(jwk).startswith("rsa key too large")


def test_skipped_key_records_published_kid() -> None:
    table = parse({"kty": "oct", "k": "AAAA", "kid": "hs"}, good())
    assert table.skipped[0].kid == "hs"


# --- the set as a whole ------------------------------------------------------------------------


def test_empty_set_has_no_usable_keys() -> None:
    with pytest.raises(InvalidJwksError, match=r"^\$\.keys: no usable keys \(empty set\)") as info:
        parse_jwks(b'{"keys": []}', url=URL)
    assert info.value.url == URL
    assert isinstance(info.value, FetchError)


def test_all_skipped_lists_reasons() -> None:
    with pytest.raises(InvalidJwksError) as info:
        parse({"kty": "oct", "k": "AAAA"}, pub(rsa_private(1024)))
    assert str(info.value) == "$.keys: no usable keys (2 skipped: [0] oct key; [1] rsa key too small (1024 bits))"


def test_long_skip_summary_is_bounded() -> None:
    with pytest.raises(InvalidJwksError, match=r"7 skipped: .*\[4\] oct key; 2 more\)$"):
        parse(*[{"kty": "oct", "k": "AAAA"}] * 7)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"", r"^\$: invalid JSON"),
        (b"not json", r"^\$: invalid JSON"),
        (b'{"keys": [NaN]}', r"^\$: invalid JSON"),
        (b'\xff{"keys": []}', r"^\$: invalid JSON"),
        (b'{"keys": ["\\ud800"]}', r"^\$: invalid JSON"),
        (b"[]", r"^\$: not a JSON object$"),
        (b'"keys"', r"^\$: not a JSON object$"),
        (b"{}", r"^\$\.keys: missing$"),
        (b'{"keys": {"0": {}}}', r"^\$\.keys: not an array$"),
        (b'{"keys": null}', r"^\$\.keys: missing$"),
        (b'{"keys": [], "keys": []}', r"^\$: duplicate member names$"),
        (b'{"keys": [{"kty": "RSA", "kid": "a", "kid": "b"}]}', r"^\$\.keys\[0\]: duplicate member names$"),
        (b'{"keys": [{"e": 1' + b"0" * 40 + b"}]}", r"^\$\.keys\[0\]\.e: number out of range$"),
        (b'{"keys": [{"e": 1' + b"0" * 5000 + b"}]}", r"^\$: invalid JSON"),
        (b'{"keys": [{"n": "' + b"A" * 20000 + b'"}]}', r"^\$\.keys\[0\]\.n: string longer than 16384"),
        (b'{"keys": [{"x5t#S256": "' + b"A" * 20000 + b'"}]}', r'^\$\.keys\[0\]\["x5t#S256"\]: string longer'),
        (b'{"keys": []}' + b"[" * 20, r"^\$: invalid JSON"),
        (b'{"keys": [' + b"[" * 40 + b"]" * 40 + b"]}", r"^\$: nests deeper than 32 levels$"),
        (b"[" * 100_000 + b"]" * 100_000, r"^\$: nests deeper than 32 levels$"),
    ],
)
def test_invalid_documents_name_the_json_path(document: bytes, message: str) -> None:
    with pytest.raises(InvalidJwksError, match=message) as info:
        parse_jwks(document, url=URL)
    assert info.value.url == URL


def test_duplicate_members_are_found_even_with_colons_in_strings() -> None:
    jwk = json.dumps(good()).encode()[:-1] + b', "x5u": "https://a:b", "kty": "EC"}'
    with pytest.raises(InvalidJwksError, match=r"^\$\.keys\[0\]: duplicate member names$"):
        parse_jwks(b'{"keys": [' + jwk + b"]}", url=URL)


def test_too_many_keys_is_refused_as_a_whole() -> None:
    with pytest.raises(InvalidJwksError, match=r"^\$\.keys: more than 3 keys \(4\)$"):
        parse_jwks(body(*[good(str(i)) for i in range(4)]), url=URL, max_keys=3)
    assert len(parse_jwks(body(*[good(str(i)) for i in range(3)]), url=URL, max_keys=3).entries) == 3


def test_unknown_top_level_members_are_ignored() -> None:
    assert parse_jwks(body(good(), issuer="https://idp", extra={"a": [1, 2]}), url=URL).key_ids == ("good",)


# --- selection -------------------------------------------------------------------------------


def test_candidates_by_kid_require_a_fitting_key() -> None:
    table = parse(
        pub(rsa_private(), kid="rs", alg="RS256"),
        pub(rsa_private(n=1), kid="any-rsa"),
        pub(ec_private("P-256"), kid="ec"),
        pub(okp_private("Ed25519"), kid="ed", alg="Ed25519"),
    )
    rs, any_rsa, ec256, ed = table.entries
    assert table.candidates("rs", "RS256") == (rs,)
    assert table.candidates("rs", "PS256") == ()  # declared alg wins
    assert table.candidates("any-rsa", "PS512") == (any_rsa,)
    assert table.candidates("ec", "RS256") == ()
    assert table.candidates("ec", "ES384") == ()
    assert table.candidates("ec", "ES256") == (ec256,)
    assert table.candidates("ed", "EdDSA") == (ed,)
    assert table.candidates("missing", "RS256") == ()
    assert table.candidates(None, "RS256") == (rs, any_rsa)
    assert table.candidates(None, "HS256") == ()


def test_kidless_candidates_are_bounded() -> None:
    table = parse(*[pub(ec_private("P-256", i)) for i in range(12)])
    assert len(table.entries) == 12
    assert table.candidates(None, "ES256") == table.entries[:10]


def test_key_fits_alg_table() -> None:
    table = parse(
        pub(rsa_private()),
        pub(ec_private("P-256")),
        pub(ec_private("P-384")),
        pub(ec_private("P-521")),
        pub(okp_private("Ed25519")),
        pub(okp_private("Ed448")),
        pub(okp_private("Ed25519"), alg="EdDSA"),
        pub(okp_private("Ed448"), alg="Ed448"),
        pub(okp_private("Ed448"), alg="EdDSA"),
        pub(okp_private("Ed25519"), alg="Ed25519"),
    )
    fits = {
        i: sorted(alg for alg in ALLOWED_DEFAULT | {"HS256", "none", "ES256K"} if key_fits_alg(e, alg))
        for i, e in enumerate(table.entries)
    }
    assert fits == {
        0: ["PS256", "PS384", "PS512", "RS256", "RS384", "RS512"],
        1: ["ES256"],
        2: ["ES384"],
        3: ["ES512"],
        4: ["Ed25519", "EdDSA"],
        5: ["Ed448", "EdDSA"],
        6: ["Ed25519", "EdDSA"],  # EdDSA and Ed25519 are aliases for an Ed25519 key
        7: ["Ed448", "EdDSA"],  # ... and EdDSA and Ed448 for an Ed448 key (RFC 9864)
        8: ["Ed448", "EdDSA"],
        9: ["Ed25519", "EdDSA"],
    }


def test_every_algorithm_name_comes_from_one_constant() -> None:
    """verify()'s default, the key rules, the testing kit and the control plane's field rules
    (hence its OpenAPI document) all list the same algorithms, so one added in one place cannot
    be refused in another (as Ed448 was)."""
    assert ALLOWED_DEFAULT == ASYMMETRIC_ALGORITHMS == SUPPORTED_ALGORITHMS == set(_ALG_KEYS)
    assert {"Ed25519", "Ed448", "EdDSA"} <= ALLOWED_DEFAULT
    document = openapi_document(admin_enabled=True, protect_reads=False, max_body_bytes=1024)
    field = document["components"]["schemas"]["ProviderRegistration"]["properties"]["algorithms"]
    assert field["anyOf"][0]["items"]["enum"] == sorted(ASYMMETRIC_ALGORITHMS)


def test_identical_documents_share_one_table_and_it_is_freed_with_its_last_user() -> None:
    import gc

    from jwks_cache._jose._jwks import TableCache

    cache = TableCache()
    document = body(good())
    first = cache.parse(document, url="https://a", max_keys=100)
    assert cache.parse(bytes(bytearray(document)), url="https://b", max_keys=100) is first
    assert cache.parse(document, url="https://a", max_keys=50) is not first  # another limit, another parse
    del first
    gc.collect()
    assert len(cache._tables) == 0


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8)).rstrip(b"=").decode()


def test_key_objects_are_made_on_first_use_only_and_then_found_by_the_warm_path() -> None:
    table = parse(pub(rsa_private(), kid="a"), pub(rsa_private(2048, 1), kid="b"))
    assert table.made == {}  # parsing judged both keys without making either
    first = table.jwk(table.by_kid["a"])
    assert table.made == {"a": first}
    assert table.jwk(table.by_kid["a"]) is first  # made once
    assert first.as_dict(private=False)["n"] == pub(rsa_private())["n"]
    assert isinstance(table.by_kid["b"].verifier, rsa.RSAPublicKey)
    assert "b" not in table.made  # verifying with a key does not put it on the lookup path


@pytest.mark.parametrize(
    ("n", "e"),
    [((1 << 2047) | 1, 2), ((1 << 2047) | 1, 1), ((1 << 2047) | 1, 65536), (1 << 2047, 65537)],
    ids=["e-2", "e-1", "even-e", "even-n"],
)
def test_rsa_public_numbers_cryptography_would_refuse_are_skipped_at_parse(n: int, e: int) -> None:
    assert skip_reason({"kty": "RSA", "kid": "bad", "n": _b64(n), "e": _b64(e)}) == "invalid RSA key (ValueError)"


def test_members_joserfc_would_refuse_are_skipped_at_parse_not_at_resolve() -> None:
    assert skip_reason({**pub(rsa_private(), kid="bad"), "x5c": 5}) == "invalid RSA key (KeyParameterError)"
    table = parse({**pub(rsa_private(), kid="bad"), "x5c": 5}, good())
    assert [k.kid for k in table.key_set().keys] == ["good"]


def test_key_ops_values_joserfc_does_not_know_keep_the_key_served_and_resolvable() -> None:
    custom = pub(rsa_private(), kid="custom", use="sig", key_ops=["verify", "x-custom"])
    table = parse(custom, good())
    assert table.key_ids == ("custom", "good")
    assert table.jwk(table.by_kid["custom"]).kid == "custom"
    assert [k.kid for k in table.key_set().keys] == ["custom", "good"]
    assert table.public_jwks()["keys"][0]["key_ops"] == ["verify", "x-custom"]  # served as published


def test_a_foreign_entry_never_lands_on_a_tables_warm_path() -> None:
    mine, other = parse(good("k")), parse(pub(rsa_private(2048, 1), kid="k"))
    assert mine.jwk(other.by_kid["k"]) is other.by_kid["k"].jwk
    assert mine.made == {}
