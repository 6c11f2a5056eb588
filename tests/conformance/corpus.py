"""Conformance corpus: key sets, discovery documents and tokens shaped like real identity providers'.

What this is
    For each provider below, the JWK Set and OIDC discovery document it publishes, written from
    its public documentation (which members each key carries, which are absent, the ``kid`` format,
    the provider's extra members), and the claims and protected header of the tokens it issues.
    ``test_conformance.py`` serves each set byte for byte from a ``LocalIdentityProvider`` and
    verifies tokens minted by four independent JOSE libraries (PyJWT, joserfc, Authlib,
    python-jose) for every algorithm the provider signs with, then tampered, expired,
    wrong-audience and wrong-issuer ones.

What it is not
    No real key, certificate or token of any provider is here: every key is generated when the
    module is first used (once per test process) and every certificate is self-signed on the
    spot. Identifiers (tenant ids, client ids, project names) are made up. The documents keep
    the members that shape parsing (``x5c``, ``x5t``, ``use``, ``alg`` present or absent,
    provider-specific extras) and leave out long lists nobody parses.

Providers (and their documentation)
    google        accounts.google.com; keys at googleapis.com/oauth2/v3/certs: RSA, ``alg``, ``use``,
                  40-hex kids, no x5c (developers.google.com/identity/openid-connect/openid-connect).
    entra-v1      Microsoft Entra ID v1 endpoints, issuer ``https://sts.windows.net/{tid}/``; keys
                  without ``alg``, with ``x5t`` = ``kid`` and ``x5c``
                  (learn.microsoft.com/entra/identity-platform/access-tokens).
    entra-v2      v2.0 endpoints of one tenant, issuer ``https://login.microsoftonline.com/{tid}/v2.0``;
                  keys also carry ``issuer`` and ``cloud_instance_name`` members.
    entra-common  the multi-tenant ``common`` endpoint: discovery's issuer is the literal template
                  ``https://login.microsoftonline.com/{tenantid}/v2.0`` and so is each key's ``issuer``.
    auth0         ``https://{tenant}.auth0.com/`` (trailing slash); keys with ``x5c``/``x5t``, kids of
                  two generations (auth0.com/docs/secure/tokens/json-web-tokens/json-web-key-set-properties).
    okta          custom authorization server ``https://{org}.okta.com/oauth2/default``; bare RSA keys
                  with ``alg`` (developer.okta.com/docs/guides/validate-access-tokens).
    keycloak      ``https://{host}/realms/{realm}``; RS256, ES256 and EdDSA signing keys with ``x5c``,
                  ``x5t``, ``x5t#S256``, beside an RSA-OAEP key with ``use: enc`` that must be skipped
                  (keycloak.org/docs/latest/server_admin, "Realm keys").
    cognito       ``https://cognito-idp.{region}.amazonaws.com/{pool}``; kids in standard base64 with
                  ``+``, ``/`` and ``=`` (docs.aws.amazon.com/cognito, "Verifying a JSON web token").
    ping          PingFederate: one key per curve and an RSA key, none with ``alg``, short kids, tokens
                  in ES256/384/512, RS256 and PS256 (docs.pingidentity.com, "JWKS endpoint").
    firebase      Firebase Auth ID tokens, issuer ``https://securetoken.google.com/{project}``; the JWKS
                  endpoint (googleapis.com/service_accounts/v1/jwk/securetoken@...), not the x509 map
                  its documentation also offers, which is not a JWK Set at all (:func:`firebase_x509_map`)
                  (firebase.google.com/docs/auth/admin/verify-id-tokens).
    github        GitHub Actions OIDC, ``https://token.actions.githubusercontent.com``; kid = upper-case
                  hex SHA-1 of the certificate, ``x5t`` the same bytes in base64url, ``x5t`` also in
                  the token header (docs.github.com, "About security hardening with OpenID Connect").
    kubernetes    a service-account issuer: kid = base64url SHA-256 of the public key's DER (what
                  kube-apiserver computes), an RSA and an ECDSA key, ``aud`` an array
                  (kubernetes.io/docs/tasks/configure-pod-container/configure-service-account,
                  "Service account issuer discovery").

Provider rules beyond one issuer and one audience (Google's second issuer spelling, Entra's
``{tenantid}`` issuer with allowed tenants and its per-key ``issuer``, Cognito's
``token_use``/``client_id``, GitHub's pinned ``repository``/``sub``) have their own tests at the end
of test_conformance.py. Not covered: registering Entra's ``common`` endpoint by discovery, since the
local server serves discovery only at its root and that issuer has a path.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
Claims: TypeAlias = Callable[[int], dict[str, Any]]

PROVIDERS: Final = (
    "google",
    "entra-v1",
    "entra-v2",
    "entra-common",
    "auth0",
    "okta",
    "keycloak",
    "cognito",
    "ping",
    "firebase",
    "github",
    "kubernetes",
)

# made-up identifiers, in each provider's format
ENTRA_TENANT: Final = "9188040d-6c67-4c5b-b112-36a304b66dad"
ENTRA_OTHER_TENANT: Final = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_CLIENT: Final = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
COGNITO_POOL: Final = "us-east-1_Ab12Cd34E"
COGNITO_CLIENT: Final = "3n4b5urk1ft4fl3mg5e62d9ado"
FIREBASE_PROJECT: Final = "conformance-demo-1a2b3"


@dataclass(frozen=True)
class Signer:
    """One published key that signs tokens, with the header members its provider adds."""

    kid: str
    alg: str
    private: PrivateKey
    header: Mapping[str, Any]  # beyond alg: kid, typ, x5t as the provider writes them
    declares_alg: bool  # whether its published JWK carries ``alg``


@dataclass(frozen=True)
class Provider:
    """What one identity provider publishes and issues."""

    name: str
    issuer: str  # the ``iss`` its tokens carry and a registration pins
    audience: str  # what a relying party expects in ``aud``
    jwks: bytes  # the JWK Set, exact bytes
    discovery: dict[str, Any]  # as published (real-looking URLs)
    signers: tuple[Signer, ...]
    claims: Claims  # a valid token's claims, issued at ``now``
    skipped: Mapping[str, str] = field(default_factory=dict)  # kid -> why parse_jwks skips it

    @property
    def served_kids(self) -> list[str]:
        keys = json.loads(self.jwks)["keys"]
        return [k["kid"] for k in keys if k["kid"] not in self.skipped]

    @property
    def algorithms(self) -> list[str]:
        return sorted({s.alg for s in self.signers})


# --- key material (generated once per process) --------------------------------------------------


@functools.cache
def _rsa(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit key per name: ~60 ms each, so every provider's keys are made once per process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _ec(name: str, curve: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key({"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[curve])


@functools.cache
def _ed25519(name: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def attacker_key(alg: str) -> PrivateKey:
    """A key of the right type that no provider publishes: signs the "foreign key" tokens."""
    if alg.startswith(("RS", "PS")):
        return _rsa("attacker")
    if alg.startswith("ES"):
        return _ec("attacker", {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg])
    return _ed25519("attacker")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1))


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _material(key: PrivateKey) -> dict[str, str]:
    """The public members of ``key`` as a JWK writes them."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        point = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        return {"kty": "EC", "crv": crv, "x": b64url(point.x.to_bytes(size)), "y": b64url(point.y.to_bytes(size))}
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


_NOT_BEFORE: Final = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@functools.cache
def _certificate(key: PrivateKey, subject: str) -> bytes:
    """A self-signed certificate for ``key`` (DER), as ``x5c`` carries one; made up, never real."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(_public_der(key)).digest()[:8]))
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_BEFORE + datetime.timedelta(days=3650))
    )
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.DER)


def _x5(key: PrivateKey, subject: str) -> dict[str, Any]:
    """``x5c`` (standard base64, RFC 7517 §4.7) and the SHA-1 thumbprint ``x5t`` of one certificate."""
    der = _certificate(key, subject)
    return {"x5c": [base64.b64encode(der).decode()], "x5t": b64url(hashlib.sha1(der).digest())}


def _x5t_s256(key: PrivateKey, subject: str) -> str:
    return b64url(hashlib.sha256(_certificate(key, subject)).digest())


def _hex40(key: PrivateKey) -> str:
    """Google's and Firebase's kid format: 40 lower-case hex digits."""
    return hashlib.sha1(_public_der(key)).hexdigest()


def _thumb43(key: PrivateKey) -> str:
    """43 base64url characters (Okta, Keycloak, Kubernetes: SHA-256 of the public key's DER)."""
    return b64url(hashlib.sha256(_public_der(key)).digest())


def _set(keys: list[dict[str, Any]], *, indent: int | None = None) -> bytes:
    return json.dumps({"keys": keys}, indent=indent).encode()


# --- providers ----------------------------------------------------------------------------------


def _google() -> Provider:
    keys = [_rsa("google-1"), _rsa("google-2")]
    published = [{"e": "AQAB", "kty": "RSA", "alg": "RS256", "use": "sig", "kid": _hex40(k)} for k in keys]
    for jwk, key in zip(published, keys, strict=True):
        jwk |= {"n": _material(key)["n"]}
    client = "407408718192-a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.apps.googleusercontent.com"

    def claims(now: int) -> dict[str, Any]:
        return {
            "iss": "https://accounts.google.com",
            "azp": client,
            "aud": client,
            "sub": "110169484474386276334",
            "email": "alice@example.com",
            "email_verified": True,
            "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
            "name": "Alice Example",
            "picture": "https://lh3.googleusercontent.com/a/default-user=s96-c",
            "given_name": "Alice",
            "family_name": "Example",
            "iat": now,
            "exp": now + 3600,
        }

    return Provider(
        name="google",
        issuer="https://accounts.google.com",
        audience=client,
        jwks=_set(published, indent=2),  # served pretty-printed
        discovery={
            "issuer": "https://accounts.google.com",
            "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
            "device_authorization_endpoint": "https://oauth2.googleapis.com/device/code",
            "token_endpoint": "https://oauth2.googleapis.com/token",
            "userinfo_endpoint": "https://openidconnect.googleapis.com/v1/userinfo",
            "revocation_endpoint": "https://oauth2.googleapis.com/revoke",
            "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
            "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
            ],
        },
        signers=tuple(
            Signer(jwk["kid"], "RS256", key, {"kid": jwk["kid"], "typ": "JWT"}, True)
            for jwk, key in zip(published, keys, strict=True)
        ),
        claims=claims,
    )


def _entra_keys(issuer_member: str | None) -> tuple[list[dict[str, Any]], list[rsa.RSAPrivateKey]]:
    """Entra's keys: no ``alg``, ``kid`` equal to ``x5t``; v2 adds ``issuer`` and ``cloud_instance_name``.

    The v1 and v2 endpoints publish the same keys, so the three Entra variants share them.
    """
    keys = [_rsa("entra-1"), _rsa("entra-2")]
    published = []
    for key in keys:
        x5 = _x5(key, "accounts.accesscontrol.windows.net")
        jwk: dict[str, Any] = {"kty": "RSA", "use": "sig", "kid": x5["x5t"], "x5t": x5["x5t"]}
        jwk |= {"n": _material(key)["n"], "e": "AQAB", "x5c": x5["x5c"]}
        if issuer_member is not None:
            jwk |= {"cloud_instance_name": "microsoftonline.com", "issuer": issuer_member}
        published.append(jwk)
    return published, keys


def _entra_discovery(issuer: str, tenant_segment: str, version: str) -> dict[str, Any]:
    base = f"https://login.microsoftonline.com/{tenant_segment}"
    suffix = "/v2.0" if version == "2.0" else ""
    return {
        "token_endpoint": f"{base}/oauth2{suffix}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery{suffix}/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2{suffix}/authorize",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2{suffix}/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "name", "oid", "tid", "ver"],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": None if tenant_segment == "common" else "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def _entra_signers(published: list[dict[str, Any]], keys: list[rsa.RSAPrivateKey], *, v1: bool) -> tuple[Signer, ...]:
    # v1 tokens repeat the thumbprint as x5t in the header
    return tuple(
        Signer(jwk["kid"], "RS256", key, {"typ": "JWT", "kid": jwk["kid"]} | ({"x5t": jwk["kid"]} if v1 else {}), False)
        for jwk, key in zip(published, keys, strict=True)
    )


def _entra_v1() -> Provider:
    published, keys = _entra_keys(None)
    issuer = f"https://sts.windows.net/{ENTRA_TENANT}/"
    audience = f"api://{ENTRA_CLIENT}"

    def claims(now: int) -> dict[str, Any]:
        return {
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + 3900,
            "acr": "1",
            "aio": "AVQAq/8TAAAA0l6r4nAhcQ3WnKy0kG6",
            "amr": ["pwd", "mfa"],
            "appid": ENTRA_CLIENT,
            "appidacr": "0",
            "name": "Alice Example",
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "rh": "0.AQkAjQSIkWdsW0yxEjajBLZtrQ.",
            "scp": "user_impersonation",
            "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
            "tid": ENTRA_TENANT,
            "unique_name": "alice@contoso.example",
            "upn": "alice@contoso.example",
            "uti": "fqiBqXLPj0eQa82S-IYFAA",
            "ver": "1.0",
        }

    return Provider(
        name="entra-v1",
        issuer=issuer,
        audience=audience,
        jwks=_set(published),
        discovery=_entra_discovery(issuer, ENTRA_TENANT, "1.0"),
        signers=_entra_signers(published, keys, v1=True),
        claims=claims,
    )


def entra_v2_claims(issuer: str, tenant: str) -> Claims:
    def claims(now: int) -> dict[str, Any]:
        return {
            "aud": ENTRA_CLIENT,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "aio": "Df2UVXL1ix!lMCWMSOJBcFatzcGfvFGhjKv8q5g0x732dR5MB5BisvGQO7YWByjd8iQDLq!eGbIDakyp5mnOrcdqHeYSnltepQmRp6AIZ8jY",
            "name": "Alice Example",
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "preferred_username": "alice@contoso.example",
            "rh": "I",
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": tenant,
            "uti": "AbCdEf123456",
            "ver": "2.0",
        }

    return claims


def _entra_v2() -> Provider:
    issuer = f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0"
    published, keys = _entra_keys(issuer)
    return Provider(
        name="entra-v2",
        issuer=issuer,
        audience=ENTRA_CLIENT,
        jwks=_set(published),
        discovery=_entra_discovery(issuer, ENTRA_TENANT, "2.0"),
        signers=_entra_signers(published, keys, v1=False),
        claims=entra_v2_claims(issuer, ENTRA_TENANT),
    )


def _entra_common() -> Provider:
    """The multi-tenant endpoint's keys, registered for one tenant's issuer here; the ``{tenantid}``
    registration that lets several tenants in has its own test."""
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    published, keys = _entra_keys(template)
    issuer = template.replace("{tenantid}", ENTRA_TENANT)
    return Provider(
        name="entra-common",
        issuer=issuer,
        audience=ENTRA_CLIENT,
        jwks=_set(published),
        discovery=_entra_discovery(template, "common", "2.0"),
        signers=_entra_signers(published, keys, v1=False),
        claims=entra_v2_claims(issuer, ENTRA_TENANT),
    )


def _auth0() -> Provider:
    keys = [_rsa("auth0-1"), _rsa("auth0-2")]
    # older tenants: base64 of the hex thumbprint; newer: a short random string
    kids = ["NjVBRjY5MDlCOUIwNzU4RTA2QzZFMDQ4QzQ2MDAyQjVDNjk1RTM2Qg", "8RE0wLHBhSsWyUu9ODr2b"]
    published = []
    for key, kid in zip(keys, kids, strict=True):
        x5 = _x5(key, "dev-conformance.us.auth0.com")
        published.append({"kty": "RSA", "use": "sig", **_material(key), "kid": kid, **x5, "alg": "RS256"})
    issuer = "https://dev-conformance.us.auth0.com/"
    api = "https://api.example.com"

    def claims(now: int) -> dict[str, Any]:
        return {
            "iss": issuer,
            "sub": "auth0|64f1c2d3e4b5a6978f0e1d2c",
            "aud": [api, f"{issuer}userinfo"],
            "iat": now,
            "exp": now + 86400,
            "azp": "q2w3e4r5t6y7u8i9o0p1a2s3d4f5g6h7",
            "scope": "openid profile email read:messages",
            "permissions": ["read:messages"],
        }

    return Provider(
        name="auth0",
        issuer=issuer,
        audience=api,
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}authorize",
            "token_endpoint": f"{issuer}oauth/token",
            "device_authorization_endpoint": f"{issuer}oauth/device/code",
            "userinfo_endpoint": f"{issuer}userinfo",
            "mfa_challenge_endpoint": f"{issuer}mfa/challenge",
            "jwks_uri": f"{issuer}.well-known/jwks.json",
            "registration_endpoint": f"{issuer}oidc/register",
            "revocation_endpoint": f"{issuer}oauth/revoke",
            "scopes_supported": ["openid", "profile", "offline_access", "name", "email"],
            "response_types_supported": ["code", "token", "id_token", "code token", "code id_token"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "claims_supported": ["aud", "auth_time", "created_at", "email", "exp", "iat", "iss", "name", "sub"],
            "request_uri_parameter_supported": False,
            "request_parameter_supported": False,
            "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
            "end_session_endpoint": f"{issuer}oidc/logout",
        },
        signers=tuple(
            Signer(kid, "RS256", key, {"typ": "JWT", "kid": kid}, True) for key, kid in zip(keys, kids, strict=True)
        ),
        claims=claims,
    )


def _okta() -> Provider:
    keys = [_rsa("okta-1"), _rsa("okta-2")]
    published = [{"kty": "RSA", "alg": "RS256", "kid": _thumb43(k), "use": "sig", **_material(k)} for k in keys]
    issuer = "https://dev-133337.okta.com/oauth2/default"

    def claims(now: int) -> dict[str, Any]:
        return {
            "ver": 1,
            "jti": "AT.4p9mE2hVQ0bX1n7cQf8zR6tYk3sL5wJ",
            "iss": issuer,
            "aud": "api://default",
            "iat": now,
            "exp": now + 3600,
            "cid": "0oa1b2c3d4e5f6g7h8i9",
            "uid": "00u1a2b3c4d5e6f7g8h9",
            "scp": ["openid", "profile", "email"],
            "auth_time": now - 60,
            "sub": "alice@example.com",
        }

    return Provider(
        name="okta",
        issuer=issuer,
        audience="api://default",
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/v1/authorize",
            "token_endpoint": f"{issuer}/v1/token",
            "userinfo_endpoint": f"{issuer}/v1/userinfo",
            "registration_endpoint": "https://dev-133337.okta.com/oauth2/v1/clients",
            "jwks_uri": f"{issuer}/v1/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "code token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post", "okta_post_message"],
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "address", "phone", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "claims_supported": ["iss", "ver", "sub", "aud", "iat", "exp", "jti", "auth_time", "amr", "idp", "nonce"],
            "code_challenge_methods_supported": ["S256"],
            "introspection_endpoint": f"{issuer}/v1/introspect",
            "revocation_endpoint": f"{issuer}/v1/revoke",
            "end_session_endpoint": f"{issuer}/v1/logout",
            "request_parameter_supported": True,
            "request_object_signing_alg_values_supported": ["HS256", "HS384", "HS512", "RS256", "ES256"],
            "dpop_signing_alg_values_supported": ["RS256", "ES256"],
        },
        signers=tuple(
            Signer(jwk["kid"], "RS256", key, {"kid": jwk["kid"]}, True)
            for jwk, key in zip(published, keys, strict=True)
        ),
        claims=claims,
    )


def _keycloak() -> Provider:
    host = "https://sso.example.com"
    issuer = f"{host}/realms/acme"
    enc = _rsa("keycloak-enc")
    signing: list[tuple[str, PrivateKey]] = [
        ("RS256", _rsa("keycloak-rs")),
        ("ES256", _ec("keycloak", "P-256")),
        ("EdDSA", _ed25519("keycloak")),
    ]
    published: list[dict[str, Any]] = []
    # the encryption key comes first, as Keycloak lists it: skipping it must not stop the walk
    enc_kid = _thumb43(enc)
    enc_x5 = _x5(enc, "acme")
    published.append(
        {"kid": enc_kid, "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", **_material(enc), **enc_x5}
        | {"x5t#S256": _x5t_s256(enc, "acme")}
    )
    signers = []
    for alg, key in signing:
        kid = _thumb43(key)
        x5 = _x5(key, "acme")
        material = _material(key)
        jwk = {"kid": kid, "kty": material.pop("kty"), "alg": alg, "use": "sig", **material, **x5}
        published.append(jwk | {"x5t#S256": _x5t_s256(key, "acme")})
        signers.append(Signer(kid, alg, key, {"typ": "JWT", "kid": kid}, True))

    def claims(now: int) -> dict[str, Any]:
        return {
            "exp": now + 300,
            "iat": now,
            "auth_time": now - 5,
            "jti": "onrtac:5e0c7a1d-3f2b-4c8d-9e6f-0a1b2c3d4e5f",
            "iss": issuer,
            "aud": "account",
            "sub": "f3b2c1d0-9e8f-4a7b-8c6d-5e4f3a2b1c0d",
            "typ": "Bearer",
            "azp": "web-app",
            "sid": "7c2a9e4f-1b3d-4e5f-8a6b-9c0d1e2f3a4b",
            "acr": "1",
            "allowed-origins": ["https://app.example.com"],
            "realm_access": {"roles": ["default-roles-acme", "offline_access", "uma_authorization"]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
            "scope": "openid email profile",
            "email_verified": False,
            "preferred_username": "alice",
        }

    return Provider(
        name="keycloak",
        issuer=issuer,
        audience="account",
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{issuer}/protocol/openid-connect/token",
            "introspection_endpoint": f"{issuer}/protocol/openid-connect/token/introspect",
            "userinfo_endpoint": f"{issuer}/protocol/openid-connect/userinfo",
            "end_session_endpoint": f"{issuer}/protocol/openid-connect/logout",
            "frontchannel_logout_session_supported": True,
            "jwks_uri": f"{issuer}/protocol/openid-connect/certs",
            "check_session_iframe": f"{issuer}/protocol/openid-connect/login-status-iframe.html",
            "grant_types_supported": [
                "authorization_code",
                "implicit",
                "refresh_token",
                "password",
                "client_credentials",
            ],
            "acr_values_supported": ["0", "1"],
            "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token"],
            "subject_types_supported": ["public", "pairwise"],
            # HS* and EdDSA listed beside the rest: a document lists what the realm could use
            "id_token_signing_alg_values_supported": [
                "PS384",
                "ES384",
                "RS384",
                "HS256",
                "HS512",
                "ES256",
                "RS256",
                "HS384",
                "ES512",
                "PS256",
                "PS512",
                "RS512",
                "EdDSA",
            ],
            "id_token_encryption_alg_values_supported": ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"],
            "userinfo_signing_alg_values_supported": ["PS384", "ES384", "RS384", "HS256", "none"],
            "request_object_signing_alg_values_supported": ["PS384", "ES384", "RS384", "HS256", "none"],
            "response_modes_supported": ["query", "fragment", "form_post", "query.jwt", "fragment.jwt"],
            "registration_endpoint": f"{issuer}/clients-registrations/openid-connect",
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            "claims_supported": ["aud", "sub", "iss", "auth_time", "name", "preferred_username", "email", "acr"],
            "claim_types_supported": ["normal"],
            "claims_parameter_supported": True,
            "scopes_supported": ["openid", "profile", "email", "roles", "web-origins", "offline_access"],
            "request_parameter_supported": True,
            "request_uri_parameter_supported": True,
            "code_challenge_methods_supported": ["plain", "S256"],
            "tls_client_certificate_bound_access_tokens": True,
            "mtls_endpoint_aliases": {
                "token_endpoint": f"{issuer}/protocol/openid-connect/token",
                "userinfo_endpoint": f"{issuer}/protocol/openid-connect/userinfo",
            },
            "authorization_response_iss_parameter_supported": True,
        },
        signers=tuple(signers),
        claims=claims,
        skipped={enc_kid: 'use is "enc", not "sig"'},
    )


def _cognito() -> Provider:
    keys = [_rsa("cognito-1"), _rsa("cognito-2")]
    # standard base64 of a SHA-256, "=" padding and "+" "/" included, as Cognito's kids look
    kids = ["1Xh7q+Pz0bN9/8wK2mLrT4vYc6sGdEfH3jUaB5nQoIk=", "aB3/dE6+gH9iJ2kL5mN8oP1qR4sT7uV0wX3yZ6aB9cD="]
    published = [
        {"alg": "RS256", "e": "AQAB", "kid": kid, "kty": "RSA", "n": _material(key)["n"], "use": "sig"}
        for key, kid in zip(keys, kids, strict=True)
    ]
    issuer = f"https://cognito-idp.us-east-1.amazonaws.com/{COGNITO_POOL}"

    def claims(now: int) -> dict[str, Any]:  # an ID token (an access token has no aud: see the tests)
        return {
            "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "email_verified": True,
            "iss": issuer,
            "cognito:username": "alice",
            "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
            "aud": COGNITO_CLIENT,
            "event_id": "cccccccc-dddd-eeee-ffff-000000000000",
            "token_use": "id",
            "auth_time": now,
            "exp": now + 3600,
            "iat": now,
            "jti": "dddddddd-eeee-ffff-0000-111111111111",
            "email": "alice@example.com",
        }

    region = "https://cognito-demo.auth.us-east-1.amazoncognito.com"
    return Provider(
        name="cognito",
        issuer=issuer,
        audience=COGNITO_CLIENT,
        jwks=_set(published),
        discovery={
            "authorization_endpoint": f"{region}/oauth2/authorize",
            "end_session_endpoint": f"{region}/logout",
            "id_token_signing_alg_values_supported": ["RS256"],
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "response_types_supported": ["code", "token"],
            "revocation_endpoint": f"{region}/oauth2/revoke",
            "scopes_supported": ["openid", "email", "phone", "profile"],
            "subject_types_supported": ["public"],
            "token_endpoint": f"{region}/oauth2/token",
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "userinfo_endpoint": f"{region}/oauth2/userInfo",
        },
        signers=tuple(
            Signer(kid, "RS256", key, {"kid": kid, "alg": "RS256"}, True) for key, kid in zip(keys, kids, strict=True)
        ),
        claims=claims,
    )


def cognito_access_claims(now: int) -> dict[str, Any]:
    """A Cognito access token: no ``aud``; the app client is in ``client_id``."""
    return {
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{COGNITO_POOL}",
        "client_id": COGNITO_CLIENT,
        "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
        "event_id": "cccccccc-dddd-eeee-ffff-000000000000",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin openid",
        "auth_time": now,
        "exp": now + 3600,
        "iat": now,
        "jti": "eeeeeeee-ffff-0000-1111-222222222222",
        "username": "alice",
    }


def _ping() -> Provider:
    """PingFederate: a key per curve and an RSA key, none declaring ``alg``, so one RSA key signs
    both RS256 and PS256 and each EC key its curve's algorithm."""
    issuer = "https://pf.example.com"
    rsa_key = _rsa("ping")
    ec_keys = {"ES256": _ec("ping", "P-256"), "ES384": _ec("ping", "P-384"), "ES512": _ec("ping", "P-521")}
    published: list[dict[str, Any]] = []
    signers = []
    for kid, (alg, key) in zip(("2y", "2z", "30"), ec_keys.items(), strict=True):
        published.append(
            {"kty": "EC", "kid": kid, "use": "sig", **{k: v for k, v in _material(key).items() if k != "kty"}}
        )
        signers.append(Signer(kid, alg, key, {"kid": kid}, False))
    published.append({"kty": "RSA", "kid": "31", "use": "sig", "n": _material(rsa_key)["n"], "e": "AQAB"})
    signers += [Signer("31", alg, rsa_key, {"kid": "31"}, False) for alg in ("RS256", "PS256")]

    def claims(now: int) -> dict[str, Any]:
        return {
            "sub": "alice",
            "aud": "pf-client",
            "jti": "XyZ0aBcD1eFgH2iJ",
            "iss": issuer,
            "iat": now,
            "exp": now + 7200,
            "auth_time": now - 10,
            "pi.sri": "b3JnLXNyaS0xMjM0NQ",
        }

    return Provider(
        name="ping",
        issuer=issuer,
        audience="pf-client",
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/as/authorization.oauth2",
            "token_endpoint": f"{issuer}/as/token.oauth2",
            "revocation_endpoint": f"{issuer}/as/revoke_token.oauth2",
            "userinfo_endpoint": f"{issuer}/idp/userinfo.openid",
            "introspection_endpoint": f"{issuer}/as/introspect.oauth2",
            "jwks_uri": f"{issuer}/pf/JWKS",
            "registration_endpoint": f"{issuer}/as/clients.oauth2",
            "ping_revoked_sris_endpoint": f"{issuer}/pf-ws/rest/sessionMgmt/revokedSris",
            "ping_end_session_endpoint": f"{issuer}/idp/startSLO.ping",
            "scopes_supported": ["openid", "profile", "email"],
            "response_types_supported": ["code", "token", "id_token", "code id_token"],
            "response_modes_supported": ["fragment", "query", "form_post"],
            "grant_types_supported": ["implicit", "authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": [
                "none",
                "HS256",
                "HS384",
                "HS512",
                "RS256",
                "RS384",
                "RS512",
                "ES256",
                "ES384",
                "ES512",
                "PS256",
                "PS384",
                "PS512",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "claim_types_supported": ["normal"],
            "claims_parameter_supported": False,
            "request_parameter_supported": True,
            "request_uri_parameter_supported": False,
        },
        signers=tuple(signers),
        claims=claims,
    )


def _firebase() -> Provider:
    keys = [_rsa("firebase-1"), _rsa("firebase-2")]
    published = [
        {"kty": "RSA", "e": "AQAB", "use": "sig", "kid": _hex40(k), "n": _material(k)["n"], "alg": "RS256"}
        for k in keys
    ]
    issuer = f"https://securetoken.google.com/{FIREBASE_PROJECT}"

    def claims(now: int) -> dict[str, Any]:
        return {
            "iss": issuer,
            "aud": FIREBASE_PROJECT,
            "auth_time": now - 30,
            "user_id": "Qx7pLm2NbV4cR8tY1wZ5sK9dF3gH",
            "sub": "Qx7pLm2NbV4cR8tY1wZ5sK9dF3gH",
            "iat": now,
            "exp": now + 3600,
            "email": "alice@example.com",
            "email_verified": False,
            "firebase": {"identities": {"email": ["alice@example.com"]}, "sign_in_provider": "password"},
        }

    return Provider(
        name="firebase",
        issuer=issuer,
        audience=FIREBASE_PROJECT,
        jwks=_set(published, indent=2),
        discovery={
            "issuer": issuer,
            "jwks_uri": "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        },
        signers=tuple(
            Signer(jwk["kid"], "RS256", key, {"alg": "RS256", "kid": jwk["kid"], "typ": "JWT"}, True)
            for jwk, key in zip(published, keys, strict=True)
        ),
        claims=claims,
    )


def firebase_x509_map() -> bytes:
    """Firebase's other key endpoint (robot/v1/metadata/x509/securetoken@...): kid -> PEM
    certificate. It is not a JWK Set, and a registration pointed at it must fail, not guess."""
    certs = {}
    for name in ("firebase-1", "firebase-2"):
        key = _rsa(name)
        pem = x509.load_der_x509_certificate(_certificate(key, "securetoken.system.gserviceaccount.com"))
        certs[_hex40(key)] = pem.public_bytes(serialization.Encoding.PEM).decode()
    return json.dumps(certs, indent=2).encode()


def _github() -> Provider:
    issuer = "https://token.actions.githubusercontent.com"
    keys = [_rsa("github-1"), _rsa("github-2")]
    published = []
    signers = []
    for key in keys:
        der = _certificate(key, "token.actions.githubusercontent.com")
        thumbprint = hashlib.sha1(der).digest()
        kid, x5t = thumbprint.hex().upper(), b64url(thumbprint)
        published.append(
            {
                "n": _material(key)["n"],
                "kty": "RSA",
                "kid": kid,
                "alg": "RS256",
                "e": "AQAB",
                "use": "sig",
                "x5c": [base64.b64encode(der).decode()],
                "x5t": x5t,
            }
        )
        signers.append(Signer(kid, "RS256", key, {"typ": "JWT", "x5t": x5t, "kid": kid}, True))

    def claims(now: int) -> dict[str, Any]:
        return {
            "jti": "example-id",
            "sub": "repo:octo-org/octo-repo:environment:prod",
            "environment": "prod",
            "aud": "sts.amazonaws.com",
            "ref": "refs/heads/main",
            "sha": "example-sha",
            "repository": "octo-org/octo-repo",
            "repository_owner": "octo-org",
            "actor_id": "12",
            "repository_visibility": "private",
            "repository_id": "74",
            "repository_owner_id": "65",
            "run_id": "example-run-id",
            "run_number": "10",
            "run_attempt": "2",
            "runner_environment": "github-hosted",
            "actor": "octocat",
            "workflow": "example-workflow",
            "head_ref": "",
            "base_ref": "",
            "event_name": "workflow_dispatch",
            "ref_type": "branch",
            "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
            "iss": issuer,
            "nbf": now - 5,
            "exp": now + 300,
            "iat": now,
        }

    return Provider(
        name="github",
        issuer=issuer,
        audience="sts.amazonaws.com",
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks",
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": [
                "sub",
                "aud",
                "exp",
                "iat",
                "iss",
                "jti",
                "nbf",
                "ref",
                "repository",
                "repository_id",
                "repository_owner",
                "run_id",
                "workflow",
                "actor",
                "environment",
                "job_workflow_ref",
                "runner_environment",
            ],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        },
        signers=tuple(signers),
        claims=claims,
    )


def _kubernetes() -> Provider:
    issuer = "https://kubernetes.default.svc.cluster.local"
    keys: list[tuple[str, PrivateKey]] = [("RS256", _rsa("kubernetes")), ("ES256", _ec("kubernetes", "P-256"))]
    published = []
    for alg, key in keys:
        material = _material(key)
        published.append({"use": "sig", "kty": material.pop("kty"), "kid": _thumb43(key), "alg": alg, **material})

    def claims(now: int) -> dict[str, Any]:
        return {
            "aud": [issuer],
            "exp": now + 3607,
            "iat": now,
            "iss": issuer,
            "jti": "2b5e6f0a-8c1d-4e3f-9a7b-6c5d4e3f2a1b",
            "kubernetes.io": {
                "namespace": "default",
                "node": {"name": "kind-control-plane", "uid": "0d8a0a8e-9b4c-4a58-8d36-1f7c0e6e2a11"},
                "pod": {"name": "app-7c9d8b6f5-x2x4q", "uid": "e3c1b6a2-5d4f-4e8a-9b7c-1a2b3c4d5e6f"},
                "serviceaccount": {"name": "default", "uid": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"},
                "warnafter": now + 3600,
            },
            "nbf": now,
            "sub": "system:serviceaccount:default:default",
        }

    return Provider(
        name="kubernetes",
        issuer=issuer,
        audience=issuer,
        jwks=_set(published),
        discovery={
            "issuer": issuer,
            "jwks_uri": "https://172.18.0.2:6443/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        },
        signers=tuple(
            Signer(jwk["kid"], alg, key, {"alg": alg, "kid": jwk["kid"]}, True)
            for jwk, (alg, key) in zip(published, keys, strict=True)
        ),
        claims=claims,
    )


_BUILDERS: Final[dict[str, Callable[[], Provider]]] = {
    "google": _google,
    "entra-v1": _entra_v1,
    "entra-v2": _entra_v2,
    "entra-common": _entra_common,
    "auth0": _auth0,
    "okta": _okta,
    "keycloak": _keycloak,
    "cognito": _cognito,
    "ping": _ping,
    "firebase": _firebase,
    "github": _github,
    "kubernetes": _kubernetes,
}
assert tuple(_BUILDERS) == PROVIDERS


@functools.cache
def provider(name: str) -> Provider:
    """The corpus entry ``name``, built (keys generated) on first use."""
    return _BUILDERS[name]()
