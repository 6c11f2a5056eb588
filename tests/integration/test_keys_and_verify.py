"""Key hygiene and verify() end to end: hostile key sets and hostile tokens against a loopback IdP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc.jwk import ECKey, OctKey, RSAKey
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import InvalidJwksError, KeyNotFoundError, SecurityError, TokenError
from jwks_cache.testing import LocalIdentityProvider


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(signature)}"


def _public(key: Any) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def _hostile_set(good: list[dict[str, Any]]) -> bytes:
    weak = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    ec = ECKey.generate_key("P-256", parameters={"kid": "curve-mismatch", "alg": "ES384"})
    private = RSAKey.generate_key(2048, parameters={"kid": "with-d", "alg": "RS256"}, private=True)
    keys = [
        *good,
        {**private.as_dict(private=True)},
        {**OctKey.generate_key(256, parameters={"kid": "oct"}).as_dict(private=True)},
        {**weak.as_dict(private=False), "kid": "weak"},
        {**_public(ec)},
        {"kty": "XYZ", "kid": "unknown-kty", "foo": "bar"},
        {**good[0], "kid": "dup"},
        {**good[1], "kid": "dup"},
        {**good[0], "kid": "enc", "use": "enc"},
    ]
    return json.dumps({"keys": keys}).encode()


async def test_hostile_keys_are_skipped_and_good_ones_served() -> None:
    with anyio.fail_after(10), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns on importing a 1024-bit key; we refuse it anyway
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            good = idp.jwks["keys"]
            idp.set_body(_hostile_set(list(good)))  # type: ignore[arg-type]
            await reg.register(config_for(idp))
            served = await reg.resolve(TENANT, PROVIDER)
            assert sorted(k.kid for k in served.keys) == sorted(idp.kids)
            for key in served.keys:
                assert not ({"d", "p", "q", "dp", "dq", "qi", "k"} & set(key.as_dict(private=False)))
            for kid in ("with-d", "oct", "weak", "curve-mismatch", "unknown-kty", "dup", "enc"):
                with pytest.raises(KeyNotFoundError):
                    await reg.get_key(TENANT, PROVIDER, kid)


#: (crv, small-order public key, a signature OpenSSL accepts for every message under it): the
#: Ed25519 identity with R = identity, S = 0 (verified without the cofactor); an order-4 Ed448
#: point (y = 0) with R = A, S = 0 (verified with the cofactor, which wipes both out)
_FORGEABLE = [
    pytest.param("Ed25519", b"\x01" + bytes(31), b"\x01" + bytes(31) + bytes(32), id="ed25519-identity"),
    pytest.param("Ed448", bytes(57), bytes(57) + bytes(57), id="ed448-order-4"),
]


@pytest.mark.parametrize(("crv", "x", "signature"), _FORGEABLE)
async def test_tokens_forged_under_a_small_order_key_are_refused_and_good_keys_still_verify(
    crv: str, x: bytes, signature: bytes
) -> None:
    with anyio.fail_after(10), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc deprecates the "EdDSA" name when minting
        async with LocalIdentityProvider(alg="EdDSA") as idp, loopback_registry() as reg:
            small = {"kty": "OKP", "crv": crv, "x": _b64(x), "kid": "small-order", "alg": "EdDSA", "use": "sig"}
            idp.set_body(json.dumps({"keys": [small, *idp.jwks["keys"]]}).encode())
            await reg.register(config_for(idp, unknown_kid_cooldown=3600.0))
            claims = {"sub": "mallory", "exp": int(time.time()) + 60}
            with pytest.raises(KeyNotFoundError, match="small-order"):  # skipped: as if never published
                await reg.verify(
                    _forge({"alg": "EdDSA", "kid": "small-order"}, claims, signature), tenant=TENANT, provider=PROVIDER
                )
            with pytest.raises(TokenError) as info:  # without a kid every fitting key is tried
                await reg.verify(_forge({"alg": "EdDSA"}, claims, signature), tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "bad_signature"
            for kid in idp.kids:
                token = idp.mint({"sub": "alice"}, kid=kid)
                assert (await reg.verify(token, tenant=TENANT, provider=PROVIDER))["sub"] == "alice"
            assert sorted(k.kid for k in (await reg.resolve(TENANT, PROVIDER)).keys) == sorted(idp.kids)
            assert idp.request_count == 2  # the first fetch and the one unknown-kid refresh the cooldown allows


@pytest.mark.parametrize(
    "body",
    [b'{"keys": []}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0"}]}', b'{"keys": {}}', b"[]", b"{"],
)
async def test_empty_or_unusable_set_fails_the_refresh_and_keeps_the_old_keys(body: bytes) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp))
            kid = idp.kids[0]
            key = await reg.get_key(TENANT, PROVIDER, kid)
            idp.set_body(body)
            with pytest.raises(InvalidJwksError, match=r"\$"):
                await reg.refresh(TENANT, PROVIDER)
            assert reg.get_key_nowait(TENANT, PROVIDER, kid) is key


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA", "Ed25519", "Ed448"])
async def test_verify_round_trip(alg: str) -> None:
    with anyio.fail_after(10), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc deprecates the "EdDSA" name when minting
        async with LocalIdentityProvider(alg=alg) as idp, loopback_registry() as reg:
            await reg.register(config_for(idp, issuer=idp.issuer, audience="api"))
            now = int(time.time())
            token = idp.mint({"sub": "alice", "aud": "api", "exp": now + 60, "iat": now})
            claims = await reg.verify(token, tenant=TENANT, provider=PROVIDER)
            assert claims["sub"] == "alice"


async def _registry_with_keys(idp: LocalIdentityProvider, reg: Any, **config: Any) -> None:
    await reg.register(config_for(idp, **config))
    await reg.resolve(TENANT, PROVIDER)


async def test_alg_none_and_hs256_with_the_rsa_public_key_are_rejected() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await _registry_with_keys(idp, reg)
            kid = idp.kids[0]
            claims = {"sub": "mallory", "exp": int(time.time()) + 60}
            with pytest.raises(TokenError) as info:
                await reg.verify(_forge({"alg": "none", "kid": kid}, claims), tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "alg_not_allowed"
            key = await reg.get_key(TENANT, PROVIDER, kid)
            pem = key.get_op_key("verify").public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            header = {"alg": "HS256", "kid": kid}
            signing_input = _forge(header, claims).rsplit(".", 1)[0]
            mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
            with pytest.raises(TokenError) as info:
                await reg.verify(f"{signing_input}.{_b64(mac)}", tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "alg_not_allowed"
            assert idp.request_count == 1


async def test_rs256_token_whose_kid_points_to_an_ec_key_is_rejected() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            ec_kid = idp.add_key(alg="ES256")
            await _registry_with_keys(idp, reg, unknown_kid_cooldown=3600.0)
            token = idp.mint({"sub": "x"}, kid=idp.kids[0], headers={"kid": ec_kid})
            with pytest.raises((TokenError, KeyNotFoundError)):
                await reg.verify(token, tenant=TENANT, provider=PROVIDER)


async def test_a_kid_the_set_has_for_another_alg_says_so() -> None:
    """An RS256 token naming a PS256 key, or an ES256 token naming an alg-less EC P-384 key, is
    refused as before (KeyNotFoundError), but the message says the key is there and what it is
    for, instead of "no usable key" that sends its reader looking for a missing key."""
    with anyio.fail_after(10):
        async with LocalIdentityProvider(keys=0) as idp, loopback_registry() as reg:
            idp.add_key(alg="PS256", kid="ps256-1")
            p384 = ECKey.generate_key("P-384", parameters={"kid": "p384"}, private=True)
            idp.set_body(json.dumps({"keys": [*idp.jwks["keys"], _public(p384)]}).encode())
            await _registry_with_keys(idp, reg)
            token = idp.mint({"sub": "x"}, kid="ps256-1", alg="RS256")
            with pytest.raises(KeyNotFoundError, match=r"^acme/idp: key 'ps256-1' is for PS256, not RS256$"):
                await reg.verify(token, tenant=TENANT, provider=PROVIDER)
            forged = _forge({"alg": "ES256", "kid": "p384"}, {"sub": "x"}, bytes(64))
            with pytest.raises(KeyNotFoundError, match=r"key 'p384' is an EC P-384 key, not one for ES256$"):
                await reg.verify(forged, tenant=TENANT, provider=PROVIDER)
            with pytest.raises(KeyNotFoundError, match=r"key 'ps256-1' is for PS256, not RS256$"):
                reg.get_key_nowait(TENANT, PROVIDER, "ps256-1", alg="RS256")
            with pytest.raises(KeyNotFoundError, match=r"key 'ps256-1' is for PS256, not \"HS256\\u0000"):
                await reg.get_key(TENANT, PROVIDER, "ps256-1", alg="HS256\0" + "x" * 1000)
            with pytest.raises(KeyNotFoundError, match=r"no usable key with kid 'gone'$"):
                await reg.verify(
                    idp.mint({"sub": "x"}, kid="ps256-1", headers={"kid": "gone"}), tenant=TENANT, provider=PROVIDER
                )


async def test_crit_is_rejected_and_jku_is_never_fetched() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, LocalIdentityProvider() as evil, loopback_registry() as reg:
            await _registry_with_keys(idp, reg)
            signer = idp._keyring.key(idp.kids[0]).get_op_key("sign")
            unsigned = _forge({"alg": "RS256", "kid": idp.kids[0], "crit": ["exp"], "exp": 1}, {"sub": "x"})
            signing_input = unsigned.rsplit(".", 1)[0].encode()
            signature = signer.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
            token = f"{signing_input.decode()}.{_b64(signature)}"
            with pytest.raises(TokenError) as info:
                await reg.verify(token, tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "crit_unsupported"
            forged = evil.mint({"sub": "mallory"}, headers={"jku": evil.jwks_url, "kid": idp.kids[0]})
            with pytest.raises(TokenError) as info:
                await reg.verify(forged, tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "bad_signature"
            assert evil.request_count == 0


@pytest.mark.parametrize(
    ("claims", "kwargs", "reason"),
    [
        ({"exp": -60}, {}, "expired"),
        ({"nbf": 600}, {}, "not_yet_valid"),
        ({"iat": 600}, {}, "issued_in_future"),
        ({"aud": "other"}, {"audience": "api"}, "audience_mismatch"),
        ({"aud": ["a", "b"]}, {"audience": "api"}, "audience_mismatch"),
        ({"aud": "api"}, {}, "audience_mismatch"),  # an audience nobody expects
        ({"iss": "https://evil.example"}, {"issuer": "https://id.example"}, "issuer_mismatch"),
    ],
)
async def test_claim_failures_have_reason_codes_and_never_leak_claims(
    claims: dict[str, Any], kwargs: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    dated = {k: (now + v if k in ("exp", "nbf", "iat") else v) for k, v in claims.items()}
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await _registry_with_keys(idp, reg)
            token = idp.mint({"sub": "secret-subject", **dated})
            with pytest.raises(TokenError) as info:
                await reg.verify(token, tenant=TENANT, provider=PROVIDER, **kwargs)
            assert info.value.reason == reason
            assert "secret-subject" not in str(info.value)
            assert "evil" not in str(info.value)


async def test_ten_megabyte_token_is_refused_cheaply() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await _registry_with_keys(idp, reg)
            with pytest.raises(TokenError) as info:
                await reg.verify("a" * 10_000_000, tenant=TENANT, provider=PROVIDER)
            assert info.value.reason == "token_too_large"


async def test_key_replaced_under_the_same_kid_is_picked_up_once() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, LocalIdentityProvider() as successor, loopback_registry() as reg:
            await _registry_with_keys(idp, reg)
            kid = idp.kids[0]
            assert successor.kids[0] == kid  # same kid names, different key material
            idp.set_body(json.dumps(successor.jwks).encode())
            token = successor.mint({"sub": "x"}, kid=kid)
            assert (await reg.verify(token, tenant=TENANT, provider=PROVIDER))["sub"] == "x"
            assert idp.request_count == 2
            with pytest.raises(TokenError):  # a forged signature under a known kid: throttled, no new request
                await reg.verify(token[:-4] + "AAAA", tenant=TENANT, provider=PROVIDER)
            assert idp.request_count == 2


async def test_discovery_resolves_the_jwks_url_from_the_issuer() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp, jwks_url=None, issuer=idp.issuer))
            token = idp.mint({"sub": "bob"})
            assert (await reg.verify(token, tenant=TENANT, provider=PROVIDER))["sub"] == "bob"
            assert idp.discovery_count == 1
            assert reg.status(TENANT, PROVIDER).jwks_url == idp.jwks_url


async def test_discovery_issuer_mismatch_is_refused() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            idp.discovery_document = {**idp.discovery_document, "issuer": "https://evil.example"}
            await reg.register(config_for(idp, jwks_url=None, issuer=idp.issuer))
            with pytest.raises(SecurityError, match="issuer"):
                await reg.get_key(TENANT, PROVIDER, "k")
            assert idp.request_count == 0


async def test_an_unknown_kid_is_quoted_short_and_escaped_in_the_error() -> None:
    """The kid comes from an untrusted header and the message lands in logs: no kilobytes, no raw controls."""
    async with LocalIdentityProvider() as idp, loopback_registry() as reg:
        await reg.register(config_for(idp))
        hostile = "\x1b[2J" + "k" * 5000
        with pytest.raises(KeyNotFoundError) as info:
            await reg.get_key(TENANT, PROVIDER, hostile)
        message = str(info.value)
        assert "\x1b" not in message and len(message) < 300
        assert "'\\x1b[2Jkkk" in message and message.endswith("...")


async def test_a_registration_can_require_claims_such_as_exp() -> None:
    """A token without exp never expires; a registration may refuse such tokens outright."""
    async with LocalIdentityProvider() as idp, loopback_registry() as reg:
        await reg.register(config_for(idp, required_claims=("exp",)))
        forever = idp.mint({"sub": "alice"})
        with pytest.raises(TokenError) as info:
            await reg.verify(forever, tenant=TENANT, provider=PROVIDER)
        assert info.value.reason == "missing_claim"
        bounded = idp.mint({"sub": "alice", "exp": int(time.time()) + 60})
        assert (await reg.verify(bounded, tenant=TENANT, provider=PROVIDER))["sub"] == "alice"
        await reg.register(config_for(idp))  # the default requires nothing beyond RFC 7519
        assert (await reg.verify(forever, tenant=TENANT, provider=PROVIDER))["sub"] == "alice"
