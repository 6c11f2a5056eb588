"""Signing keys of the local identity provider: generation, publication, rotation and minting.

Kept apart from the HTTP server so a test can mint tokens (or check what is published) with no
socket at all, and so the server module stays about bytes on the wire.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, KeyParameters, KeySetSerialization, OKPKey, RSAKey

from .._config import ASYMMETRIC_ALGORITHMS
from .._errors import ConfigError, KeyNotFoundError

__all__ = ["SUPPORTED_ALGORITHMS", "KeyRing", "SigningKey", "generate_key"]

#: JWS algorithms the kit can generate keys for: every one ``verify()`` may accept, so a test can
#: mint for any algorithm a provider is allowed.
SUPPORTED_ALGORITHMS: Final = ASYMMETRIC_ALGORITHMS

_RSA_BITS: Final = 2048
_EC_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
#: the polymorphic "EdDSA" gets Ed25519 keys, what providers that use it publish
_OKP_CURVES: Final[dict[str, Literal["Ed25519", "Ed448"]]] = {
    "EdDSA": "Ed25519",
    "Ed25519": "Ed25519",
    "Ed448": "Ed448",
}
_MAX_KEYS: Final = 100

SigningKey: TypeAlias = RSAKey | ECKey | OKPKey


class _RsaPool:
    """RSA private keys handed back by key rings that are done with them.

    Generating a 2048-bit key costs ~60 ms, two per identity provider, so a test suite would spend
    most of its time there. Keys return to the pool only when their ring is released (its
    LocalIdentityProvider exited), so two providers alive at once never share key material.
    """

    def __init__(self) -> None:
        self._free: list[rsa.RSAPrivateKey] = []

    def take(self) -> rsa.RSAPrivateKey:
        if self._free:
            return self._free.pop()
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)

    def give(self, key: rsa.RSAPrivateKey) -> None:
        if len(self._free) < _POOL_CAP:
            self._free.append(key)


_POOL_CAP: Final = 64
_RSA_POOL: Final = _RsaPool()  # process-wide by design: test-only key material, see _RsaPool


def generate_key(alg: str, kid: str) -> SigningKey:
    """Generate a private key for ``alg`` whose public JWK carries ``kid``, ``alg`` and ``use=sig``.

    RSA keys may come from keys released by earlier key rings (see :meth:`KeyRing.release`).

    Raises:
        ConfigError: ``alg`` is not one of :data:`SUPPORTED_ALGORITHMS`.
    """
    _check_alg(alg)
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg.startswith(("RS", "PS")):
        return RSAKey.import_key(_RSA_POOL.take(), parameters=parameters)
    if alg in _EC_CURVES:
        return ECKey.generate_key(_EC_CURVES[alg], parameters=parameters, private=True)
    return OKPKey.generate_key(_OKP_CURVES[alg], parameters=parameters, private=True)


def _check_alg(alg: str) -> None:
    if alg not in SUPPORTED_ALGORITHMS:
        raise ConfigError(f"alg must be one of {sorted(SUPPORTED_ALGORITHMS)} (got {alg!r})")


class KeyRing:
    """Private keys by kid in creation order; the published subset is the served JWKS.

    Retired keys stay in the ring (unpublished) so tests can still mint with them, which is how
    "a token signed by a rotated-out key is refused" is written.

    ``version`` changes on every change of the published set, so the server can cache the
    encoded document and move ``Last-Modified`` forward.
    """

    def __init__(self, *, alg: str = "RS256", count: int = 2) -> None:
        if not 0 <= count <= _MAX_KEYS:
            raise ConfigError(f"keys must be in 0..{_MAX_KEYS} (got {count!r})")
        _check_alg(alg)
        self.alg = alg
        self.version = 0
        self._keys: dict[str, SigningKey] = {}
        self._members: dict[str, dict[str, Any]] = {}  # kid -> extra public members to publish
        self._published: list[str] = []
        self._serial = 0
        self._released = False
        for _ in range(count):
            self.add_key()

    @property
    def kids(self) -> list[str]:
        """The published kids, oldest first."""
        return list(self._published)

    def key(self, kid: str) -> SigningKey:
        """The private key for ``kid``, published or retired."""
        try:
            return self._keys[kid]
        except KeyError:
            raise KeyNotFoundError(f"no key with kid {kid!r} in this key ring") from None

    def add_key(
        self, *, alg: str | None = None, kid: str | None = None, members: Mapping[str, Any] | None = None
    ) -> str:
        """Generate and publish a new key; returns its kid (``key-N`` unless given).

        ``members`` are published in the key's JWK beside the generated ones, e.g.
        ``{"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}`` as Entra ID publishes.
        """
        if kid is None:
            self._serial += 1
            kid = f"key-{self._serial}"
            while kid in self._keys:  # a caller-chosen kid may have taken the name; bounded by len(_keys)
                self._serial += 1
                kid = f"key-{self._serial}"
        elif kid in self._keys:
            raise ConfigError(f"kid {kid!r} is already in the key ring")
        self._keys[kid] = generate_key(alg or self.alg, kid)
        if members:
            self._members[kid] = dict(members)
        self._published.append(kid)
        self.version += 1
        return kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing ``kid``; the private key stays available to :meth:`mint`."""
        if kid not in self._published:
            raise KeyNotFoundError(f"kid {kid!r} is not published")
        self._published.remove(kid)
        self.version += 1

    def rotate(self) -> str:
        """Publish a new key and retire the oldest published one; returns the new kid."""
        oldest = self._published[0] if self._published else None
        new_kid = self.add_key()
        if oldest is not None:
            self.remove_key(oldest)
        return new_kid

    def release(self) -> None:
        """Offer this ring's RSA keys to rings created later (its own provider has stopped serving).

        The ring itself keeps working for assertions after the provider exited; only rings made
        afterwards may draw the same key material, never two live providers at once.
        """
        if self._released:
            return
        self._released = True
        for key in self._keys.values():
            raw = key.private_key if isinstance(key, RSAKey) else None
            if isinstance(raw, rsa.RSAPrivateKey):
                _RSA_POOL.give(raw)

    def public_jwks(self) -> KeySetSerialization:
        """The JWK Set document of the published keys, public members only."""
        return {
            "keys": [self._keys[kid].as_dict(private=False) | self._members.get(kid, {}) for kid in self._published]
        }

    def mint(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        alg: str | None = None,
        headers: Mapping[str, Any] | None = None,
        issuer: str | None = None,
    ) -> str:
        """Sign a JWT.

        Args:
            claims: the payload; ``iss`` defaults to ``issuer`` when that is given.
            kid: the signing key (published or retired); default the oldest published key.
            alg: the JWS algorithm; default the key's own. A different one signs with a copy of
                the key that lacks ``alg``, to build algorithm-mismatch tokens.
            headers: extra or overriding protected header members (``kid``, ``typ``, ...).
            issuer: the default ``iss``.

        Raises:
            KeyNotFoundError: no such kid, or no published key to default to.
            ConfigError: the algorithm cannot sign with that key.
        """
        if kid is None:
            if not self._published:
                raise KeyNotFoundError("no published key to mint with; pass kid=")
            kid = self._published[0]
        key = self.key(kid)
        header: dict[str, Any] = {"alg": alg or key.alg, "kid": kid, **(headers or {})}
        payload: dict[str, Any] = ({"iss": issuer} if issuer is not None else {}) | dict(claims)
        signing_key = key if header["alg"] == key.alg else _without_alg(key)
        try:
            with warnings.catch_warnings():
                # joserfc flags "EdDSA" as deprecated (RFC 9864), but IdPs still publish it.
                warnings.simplefilter("ignore", SecurityWarning)
                return jwt.encode(header, payload, signing_key, algorithms=[str(header["alg"])])
        except JoseError as exc:
            raise ConfigError(f"alg {header['alg']!r} cannot sign with key {kid!r}: {exc}") from exc


def _without_alg(key: SigningKey) -> SigningKey:
    """joserfc refuses to sign with a key whose ``alg`` differs from the header's; drop it."""
    members = {name: value for name, value in key.as_dict(private=True).items() if name != "alg"}
    return type(key).import_key(members)
