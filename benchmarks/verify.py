"""Warm token verification per algorithm: ``Registry.verify`` against raw cryptography, PyJWT and joserfc.

The floor is the signature check alone, as cryptography exposes it: the verify call on the already
split signing input and the decoded signature (ES256 adds the raw r||s to DER conversion that API
needs). Every contender checks the same claims (exp, iat, aud, iss) and receives its key object
ready-made outside the loop, which only flatters the peers: ours looks its key up by kid each time.
"""

from __future__ import annotations

import base64
import time
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import JWKRegistry

from ._common import (
    BACKENDS,
    PROVIDER,
    TENANT,
    CaseResult,
    Row,
    best_per_call,
    config,
    idp_in_thread,
    loopback_registry,
    time_async,
    time_sync,
    verdict,
)

NAME = "verify"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
_AUDIENCE = "bench-api"
_FLOOR_FACTOR = 1.5


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _floor(token: str, key: Any) -> Callable[[], None]:
    """The bare signature check for this token and key, with every input prepared."""
    header, payload, signature = token.split(".")
    data = f"{header}.{payload}".encode("ascii")
    sig = _b64(signature)
    if isinstance(key, rsa.RSAPublicKey):
        pkcs, sha = padding.PKCS1v15(), hashes.SHA256()
        return lambda: key.verify(sig, data, pkcs, sha)
    if isinstance(key, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def check() -> None:
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            key.verify(der, data, ecdsa)

        return check
    assert isinstance(key, ed25519.Ed25519PublicKey)
    return lambda: key.verify(sig, data)


def _peers(token: str, jwk: dict[str, Any], alg: str, issuer: str) -> dict[str, Callable[[], object]]:
    jose_key = JWKRegistry.import_key(jwk)
    crypto_key = jose_key.public_key
    assert isinstance(crypto_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    claims_registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer}, aud={"essential": True, "value": _AUDIENCE}
    )

    def pyjwt_decode() -> object:
        return pyjwt.decode(token, crypto_key, algorithms=[alg], audience=_AUDIENCE, issuer=issuer)

    def joserfc_decode() -> object:
        decoded = jose_jwt.decode(token, jose_key, algorithms=[alg])
        claims_registry.validate(decoded.claims)
        return decoded.claims

    return {"floor": _floor(token, crypto_key), "pyjwt": pyjwt_decode, "joserfc": joserfc_decode}


async def _measure(url: str, token: str, jwk: dict[str, Any], alg: str, calls: int, repeats: int) -> dict[str, float]:
    async with loopback_registry() as reg:
        await reg.register(config(url))
        issuer = url.rsplit("/", 1)[0]
        t, p = TENANT, PROVIDER
        claims = await reg.verify(token, tenant=t, provider=p, audience=_AUDIENCE, issuer=issuer)
        assert claims["aud"] == _AUDIENCE
        peers = _peers(token, jwk, alg, issuer)
        for peer in peers.values():
            peer()  # each must accept the token before it is timed

        async def ours(n: int) -> int:
            return await time_async(
                lambda: reg.verify(token, tenant=t, provider=p, audience=_AUDIENCE, issuer=issuer), n
            )

        def sync_batch(fn: Callable[[], object]) -> Callable[[int], Any]:
            async def batch(n: int) -> int:
                return time_sync(fn, n)

            return batch

        contenders = {"registry_verify": ours} | {name: sync_batch(fn) for name, fn in peers.items()}
        ns = await best_per_call(contenders, calls, repeats)
        return {name: value / 1000 for name, value in ns.items()}


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    calls, repeats = (50, 25) if quick else (100, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc flags "EdDSA" as deprecated (RFC 9864)
        for alg in ALGORITHMS:
            with idp_in_thread(keys=1, alg=alg) as (idp, _portal):
                now = int(time.time())
                token = idp.mint({"sub": "user-1", "aud": _AUDIENCE, "iat": now, "exp": now + 86_400})
                jwk = dict(idp.jwks["keys"][0])
                for backend in BACKENDS:
                    us = anyio.run(_measure, idp.jwks_url, token, jwk, alg, calls, repeats, backend=backend)
                    result.raw.setdefault(backend, {})[alg] = {"us_per_token": us}
                    _rows(result, backend, alg, us)
    result.notes.append("floor = cryptography verify on prepared inputs; peers get their key object ready-made.")
    return result


def _rows(result: CaseResult, backend: str, alg: str, us: dict[str, float]) -> None:
    ours, floor = us["registry_verify"], us["floor"]
    for name in ("floor", "pyjwt", "joserfc"):
        result.add(Row(NAME, backend, f"{alg} {name}", us[name], "us/token"))
    result.add(
        Row(
            NAME,
            backend,
            f"{alg} verify vs floor",
            ours,
            "us/token",
            "cryptography",
            ours / floor,
            f"<= {_FLOOR_FACTOR}x",
            verdict(ours <= _FLOOR_FACTOR * floor),
        )
    )
    for peer, label in (("pyjwt", "PyJWT decode"), ("joserfc", "joserfc decode")):
        speedup = us[peer] / ours
        result.add(
            Row(
                NAME,
                backend,
                f"{alg} verify vs {peer}",
                ours,
                "us/token",
                label,
                speedup,
                "> 1x faster",
                verdict(speedup > 1.0),
            )
        )
