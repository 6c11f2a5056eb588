"""Four independent JOSE libraries that mint the corpus' tokens, and the tampering done to them.

Each library signs with its own code (PyJWT and python-jose on ``cryptography``, joserfc, Authlib),
so a misreading of RFC 7515/7518 shared between our verifier and any one signer cannot hide.
python-jose has no PS* and no EdDSA: those pairs are left out (:data:`ALGORITHMS`).
"""

from __future__ import annotations

import base64
import functools
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk as jose_jwk
from jose import jwt as jose_jwt
from joserfc import jwt as joserfc_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

with warnings.catch_warnings():
    # Authlib's import installs a process-wide "always" filter for its deprecation warning and then
    # warns that authlib.jose is deprecated in favour of joserfc; catch_warnings undoes both.
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib import jose as authlib_jose
    from authlib.jose import JsonWebToken

from tests.conformance.corpus import PrivateKey

Mint = Callable[[str, PrivateKey, Mapping[str, Any], Mapping[str, Any]], str]

_RSA: Final = ("RS256", "RS384", "RS512")
_PSS: Final = ("PS256", "PS384", "PS512")
_ECDSA: Final = ("ES256", "ES384", "ES512")


def _pyjwt(alg: str, key: PrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    # PyJWT adds typ=JWT unless told not to: keep the provider's header as it is
    return pyjwt.encode(dict(claims), key, algorithm=alg, headers={"typ": None, **header, "alg": alg})


def _joserfc(alg: str, key: PrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc deprecates the "EdDSA" name (RFC 9864)
        return joserfc_jwt.encode({**header, "alg": alg}, dict(claims), _joserfc_key(key), algorithms=[alg])


def _authlib(alg: str, key: PrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    token: bytes = JsonWebToken([alg]).encode({**header, "alg": alg}, dict(claims), _authlib_key(key))
    return token.decode()


def _python_jose(alg: str, key: PrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    extra = {name: value for name, value in header.items() if name != "alg"}
    return jose_jwt.encode(dict(claims), _python_jose_key(key, alg), algorithm=alg, headers=extra)


# Each library's key object is made once per key: loading a private RSA key re-checks it, which
# costs more than signing, and the corpus signs a few hundred tokens.


@functools.cache
def _joserfc_key(key: PrivateKey) -> RSAKey | ECKey | OKPKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(key)
    return OKPKey.import_key(key)


@functools.cache
def _authlib_key(key: PrivateKey) -> Any:
    if isinstance(key, rsa.RSAPrivateKey):
        return authlib_jose.RSAKey.import_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return authlib_jose.ECKey.import_key(key)
    return authlib_jose.OKPKey.import_key(key)


@functools.cache
def _python_jose_key(key: PrivateKey, alg: str) -> Any:
    return jose_jwk.construct(key, alg)


EVERY: Final = (*_RSA, *_PSS, *_ECDSA, "EdDSA")

#: library -> (mint, the algorithms it can sign)
LIBRARIES: Final[dict[str, tuple[Mint, frozenset[str]]]] = {
    "pyjwt": (_pyjwt, frozenset(EVERY)),
    "joserfc": (_joserfc, frozenset(EVERY)),
    "authlib": (_authlib, frozenset(EVERY)),
    "python-jose": (_python_jose, frozenset((*_RSA, *_ECDSA))),
}


# --- tampering: what an attacker does to a token without the key ----------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(_unb64(token.split(".")[0]))
    return header


def with_claims(token: str, **changes: Any) -> str:
    """The same header and signature over changed claims."""
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload)) | changes
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def with_flipped_signature(token: str) -> str:
    """One bit of the signature flipped (still canonical base64url, still the right length)."""
    header, payload, signature = token.split(".")
    raw = bytearray(_unb64(signature))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{_b64(bytes(raw))}"


def relabelled(token: str, alg: str, *, signature: str | None = None) -> str:
    """The header's ``alg`` replaced, the rest kept (or the signature replaced, for ``none``)."""
    _, payload, old_signature = token.split(".")
    header = header_of(token) | {"alg": alg}
    return f"{_b64(json.dumps(header).encode())}.{payload}.{old_signature if signature is None else signature}"
