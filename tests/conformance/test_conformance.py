"""Real-world shapes end to end: each provider of the corpus (see corpus.py) served byte for byte,
tokens from four JOSE libraries verified, and tampered, expired, wrong-audience and wrong-issuer
tokens refused with the reason a caller relies on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from tests.conformance import corpus, signers
from tests.conformance.corpus import PROVIDERS, Provider, Signer
from tests.conformance.signers import LIBRARIES
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import InvalidJwksError, KeyNotFoundError, Registry, TokenError
from jwks_cache._jose._jwks import parse_jwks
from jwks_cache.testing import LocalIdentityProvider

#: what verify() did with a token: "verified", a TokenError reason, or an exception's type name
Outcome = str


# --- building the cases ----------------------------------------------------------------------------


def _expired(claims: dict[str, Any], now: int) -> dict[str, Any]:
    """The same claims, issued and expired two hours ago (``nbf`` moved along when present)."""
    back = {"iat": now - 7200, "exp": now - 120}
    return claims | back | ({"nbf": now - 7200} if "nbf" in claims else {})


def _wrong_issuer(provider: Provider) -> str:
    """Another issuer of the same shape: the other tenant for Entra, a look-alike host elsewhere."""
    if provider.name.startswith("entra"):
        return provider.issuer.replace(corpus.ENTRA_TENANT, corpus.ENTRA_OTHER_TENANT)
    return provider.issuer.replace("://", "://evil.", 1)


def _cross_type_alg(alg: str) -> str:
    """An algorithm for another key type: no published key of this kid may verify it."""
    return "ES256" if alg.startswith(("RS", "PS")) else "RS256"


def _cases(provider: Provider, library: str, now: int) -> list[tuple[str, str, Outcome]]:
    """(label, token, expected outcome) for every algorithm ``library`` can sign for ``provider``."""
    mint, supported = LIBRARIES[library]
    valid_claims = provider.claims(now)
    cases: list[tuple[str, str, Outcome]] = []
    firsts: dict[str, Signer] = {}
    for signer in provider.signers:
        if signer.alg in supported:
            token = mint(signer.alg, signer.private, signer.header, valid_claims)
            cases.append((f"{signer.alg} {signer.kid[:12]} valid", token, "verified"))
            firsts.setdefault(signer.alg, signer)
    for alg, signer in firsts.items():
        valid = next(token for label, token, _ in cases if label.startswith(f"{alg} {signer.kid[:12]} "))

        def signed(claims: Mapping[str, Any], *, key: Any = signer.private, by: Signer = signer) -> str:
            return mint(by.alg, key, by.header, claims)

        cases += [
            (f"{alg} payload changed", signers.with_claims(valid, sub="mallory"), "bad_signature"),
            (f"{alg} signature changed", signers.with_flipped_signature(valid), "bad_signature"),
            (f"{alg} relabelled HS256", signers.relabelled(valid, "HS256"), "alg_not_allowed"),
            (f"{alg} relabelled none", signers.relabelled(valid, "none", signature=""), "alg_not_allowed"),
            (
                f"{alg} relabelled {_cross_type_alg(alg)}",
                signers.relabelled(valid, _cross_type_alg(alg)),
                "KeyNotFoundError: misfit",
            ),
            (f"{alg} foreign key, same kid", signed(valid_claims, key=corpus.attacker_key(alg)), "bad_signature"),
            (f"{alg} expired", signed(_expired(valid_claims, now)), "expired"),
            (f"{alg} wrong audience", signed(valid_claims | {"aud": "https://evil.example/api"}), "audience_mismatch"),
            (f"{alg} wrong issuer", signed(valid_claims | {"iss": _wrong_issuer(provider)}), "issuer_mismatch"),
        ]
        if alg in ("RS256", "PS256"):
            # the other RSA padding: a key that declares its alg is not for it at all; one that does
            # not (Entra, Ping) is, and the signature then fails
            other = "PS256" if alg == "RS256" else "RS256"
            expected = "KeyNotFoundError: misfit" if signer.declares_alg else "bad_signature"
            cases.append((f"{alg} relabelled {other}", signers.relabelled(valid, other), expected))
    return cases


async def _outcome(reg: Registry, token: str, expected_claims: Mapping[str, Any]) -> Outcome:
    try:
        claims = await reg.verify(token, tenant=TENANT, provider=PROVIDER)
    except TokenError as exc:
        return exc.reason
    except KeyNotFoundError as exc:
        # a kid the set has, for another algorithm, is said to be one (not "no usable key")
        return (
            "KeyNotFoundError: misfit"
            if " is for " in str(exc) or " key, not one for " in str(exc)
            else type(exc).__name__
        )
    return "verified" if claims == expected_claims else f"verified with other claims: {sorted(claims)}"


# --- the published documents -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
def test_published_key_set_serves_every_signing_key(name: str) -> None:
    """Every signing key of the set is served (their extra members, x5c chains and kid formats
    notwithstanding) and only the keys that cannot verify (Keycloak's ``use: enc``) are skipped."""
    provider = corpus.provider(name)
    table = parse_jwks(provider.jwks, url=f"https://{name}.example/jwks")
    assert list(table.key_ids) == provider.served_kids
    assert {s.kid: s.reason for s in table.skipped} == dict(provider.skipped)
    assert {s.kid for s in provider.signers} == set(provider.served_kids)
    published = {k["kid"]: k for k in json.loads(provider.jwks)["keys"]}
    for served in table.public_jwks()["keys"]:
        for member in ("x5c", "x5t", "x5t#S256", "alg", "use", "crv", "n", "e", "x", "y"):
            assert served.get(member) == published[served["kid"]].get(member), (served["kid"], member)


def test_firebase_x509_map_is_not_taken_for_a_key_set() -> None:
    """Firebase documents a kid -> PEM certificate map beside its JWKS: pointed at it, a
    registration fails with the JSON path at fault instead of guessing keys out of it."""
    with pytest.raises(InvalidJwksError, match=r"\$\.keys: missing"):
        parse_jwks(corpus.firebase_x509_map(), url="https://www.googleapis.com/robot/v1/metadata/x509/x")


# --- tokens from every library, served over HTTP -------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_tokens_of_every_library_verify_and_tampered_ones_are_refused(name: str) -> None:
    """One server and one registry per provider (a registry costs a TLS context, the dearest part):
    registered once by ``jwks_url`` with the provider's own issuer, for every library's tokens, and
    once by discovery, which follows the provider's document (its URLs moved to the loopback
    server) to the same set; HS* among the listed algorithms, nested objects and nulls in it get
    in nobody's way."""
    provider = corpus.provider(name)
    now = int(time.time())
    valid_claims = provider.claims(now)
    cases = [
        (f"{library}: {label}", token, expected)
        for library in LIBRARIES
        for label, token, expected in _cases(provider, library, now)
    ]
    with anyio.fail_after(60):
        async with LocalIdentityProvider(keys=0) as idp, loopback_registry() as reg:
            idp.set_body(provider.jwks)
            await reg.register(config_for(idp, issuer=provider.issuer, audience=provider.audience))
            outcomes = {label: await _outcome(reg, token, valid_claims) for label, token, _ in cases}
            assert outcomes == {label: expected for label, _, expected in cases}
            if name != "entra-common":  # its discovery issuer is a template, and /common/v2.0 has a path
                await _verify_by_discovery(provider, idp, reg, now)


async def _verify_by_discovery(provider: Provider, idp: LocalIdentityProvider, reg: Registry, now: int) -> None:
    issuer = idp.issuer + ("/" if provider.issuer.endswith("/") else "")  # Auth0's trailing slash
    idp.discovery_document = provider.discovery | {"issuer": issuer, "jwks_uri": idp.jwks_url}
    # keys that name their issuer (Entra's) name this one now, as the real ones name their tenant's
    idp.set_body(provider.jwks.replace(provider.issuer.encode(), issuer.encode()))
    fetched = idp.request_count
    await reg.register(config_for(idp, provider="discovered", jwks_url=None, issuer=issuer, audience=provider.audience))
    signer = provider.signers[0]
    claims = provider.claims(now) | {"iss": issuer}
    token = LIBRARIES["joserfc"][0](signer.alg, signer.private, signer.header, claims)
    assert await reg.verify(token, tenant=TENANT, provider="discovered") == claims
    assert (idp.discovery_count, idp.request_count - fetched) == (1, 1)


async def test_firebase_x509_endpoint_fails_the_registration_loudly() -> None:
    provider = corpus.provider("firebase")
    signer = provider.signers[0]
    with anyio.fail_after(30):
        async with LocalIdentityProvider(keys=0) as idp, loopback_registry() as reg:
            idp.set_body(corpus.firebase_x509_map())
            await reg.register(config_for(idp, issuer=provider.issuer, audience=provider.audience))
            token = LIBRARIES["pyjwt"][0](signer.alg, signer.private, signer.header, provider.claims(int(time.time())))
            with pytest.raises(InvalidJwksError, match=r"\$\.keys: missing"):
                await reg.verify(token, tenant=TENANT, provider=PROVIDER)


async def test_cognito_access_token_has_no_audience() -> None:
    """A Cognito access token carries ``client_id``, not ``aud``: it verifies where no audience is
    expected and is refused where one is (pinning ``client_id`` needs claim_values, below)."""
    provider = corpus.provider("cognito")
    signer = provider.signers[0]
    claims = corpus.cognito_access_claims(int(time.time()))
    with anyio.fail_after(30):
        async with LocalIdentityProvider(keys=0) as idp, loopback_registry() as reg:
            idp.set_body(provider.jwks)
            await reg.register(config_for(idp, issuer=provider.issuer))
            for library, (mint, _) in LIBRARIES.items():
                token = mint(signer.alg, signer.private, signer.header, claims)
                assert await reg.verify(token, tenant=TENANT, provider=PROVIDER) == claims, library
                with pytest.raises(TokenError) as info:
                    await reg.verify(token, tenant=TENANT, provider=PROVIDER, audience=corpus.COGNITO_CLIENT)
                assert info.value.reason == "audience_mismatch", library


# --- per-provider rules: several issuers, tenant templates, claim values -------------------------


async def _verdicts(
    provider: Provider, tokens: Mapping[str, tuple[Signer, Mapping[str, Any]]], **config: Any
) -> dict[str, Outcome]:
    """Each token (signed by PyJWT) through a registration of ``provider``'s set with ``config``."""
    mint = LIBRARIES["pyjwt"][0]
    with anyio.fail_after(30):
        async with LocalIdentityProvider(keys=0) as idp, loopback_registry() as reg:
            idp.set_body(provider.jwks)
            await reg.register(config_for(idp, **config))
            return {
                label: await _outcome(reg, mint(signer.alg, signer.private, signer.header, claims), claims)
                for label, (signer, claims) in tokens.items()
            }


async def test_google_accepts_both_of_its_issuer_spellings() -> None:
    """Google signs ID tokens with ``iss`` "https://accounts.google.com" or "accounts.google.com"."""
    google = corpus.provider("google")
    signer, claims = google.signers[0], google.claims(int(time.time()))
    verdicts = await _verdicts(
        google,
        {
            "https form": (signer, claims),
            "bare form": (signer, claims | {"iss": "accounts.google.com"}),
            "look-alike": (signer, claims | {"iss": "https://accounts.google.com.evil.example"}),
        },
        issuer=google.issuer,
        accepted_issuers=("accounts.google.com",),
        audience=google.audience,
    )
    assert verdicts == {"https form": "verified", "bare form": "verified", "look-alike": "issuer_mismatch"}


def _tenant_claims(now: int, *, iss_tenant: str, tid: str) -> dict[str, Any]:
    issuer = f"https://login.microsoftonline.com/{iss_tenant}/v2.0"
    return corpus.entra_v2_claims(issuer, tid)(now)


async def test_entra_common_keys_serve_the_allowed_tenants_through_the_template() -> None:
    """The ``common`` keys (``issuer`` member "…/{tenantid}/v2.0") under a ``{tenantid}`` issuer:
    each allowed tenant's token verifies, another tenant's is refused, and a token whose ``iss``
    names another tenant than its ``tid`` matches neither the template nor the key's issuer."""
    entra = corpus.provider("entra-common")
    signer, now, third = entra.signers[0], int(time.time()), "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    tokens = {
        "tenant A": (signer, _tenant_claims(now, iss_tenant=corpus.ENTRA_TENANT, tid=corpus.ENTRA_TENANT)),
        "tenant B": (signer, _tenant_claims(now, iss_tenant=corpus.ENTRA_OTHER_TENANT, tid=corpus.ENTRA_OTHER_TENANT)),
        "tenant C": (signer, _tenant_claims(now, iss_tenant=third, tid=third)),
        "iss of A, tid of B": (
            signer,
            _tenant_claims(now, iss_tenant=corpus.ENTRA_TENANT, tid=corpus.ENTRA_OTHER_TENANT),
        ),
    }
    verdicts = await _verdicts(
        entra,
        tokens,
        issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
        allowed_tenant_ids=(corpus.ENTRA_TENANT, corpus.ENTRA_OTHER_TENANT),
        audience=entra.audience,
    )
    assert verdicts == {
        "tenant A": "verified",
        "tenant B": "verified",
        "tenant C": "tenant_not_allowed",
        "iss of A, tid of B": "issuer_mismatch",
    }


async def test_entra_key_issuer_member_binds_the_key_to_its_tenant() -> None:
    """Tenant A's own keys (``issuer`` member naming tenant A) do not verify tenant B's token, even
    under a registration that lets both tenants in."""
    entra = corpus.provider("entra-v2")
    signer, now = entra.signers[0], int(time.time())
    tokens = {
        "tenant A": (signer, _tenant_claims(now, iss_tenant=corpus.ENTRA_TENANT, tid=corpus.ENTRA_TENANT)),
        "tenant B": (signer, _tenant_claims(now, iss_tenant=corpus.ENTRA_OTHER_TENANT, tid=corpus.ENTRA_OTHER_TENANT)),
    }
    verdicts = await _verdicts(
        entra,
        tokens,
        issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
        allowed_tenant_ids=(corpus.ENTRA_TENANT, corpus.ENTRA_OTHER_TENANT),
        audience=entra.audience,
    )
    assert verdicts == {"tenant A": "verified", "tenant B": "issuer_mismatch"}


async def test_cognito_token_use_and_client_id_are_pinned() -> None:
    """An API taking Cognito access tokens pins ``token_use`` and ``client_id`` (no ``aud`` to check)."""
    cognito = corpus.provider("cognito")
    signer, access = cognito.signers[0], corpus.cognito_access_claims(int(time.time()))
    without_client = {name: value for name, value in access.items() if name != "client_id"}
    verdicts = await _verdicts(
        cognito,
        {
            "access token": (signer, access),
            "token_use id": (signer, access | {"token_use": "id"}),
            "another app client": (signer, access | {"client_id": "7abc0other0client0id0abc01"}),
            "no client_id": (signer, without_client),
        },
        issuer=cognito.issuer,
        claim_values={"token_use": ("access",), "client_id": (corpus.COGNITO_CLIENT,)},
    )
    assert verdicts == {
        "access token": "verified",
        "token_use id": "claim_mismatch",
        "another app client": "claim_mismatch",
        "no client_id": "missing_claim",
    }


async def test_github_actions_repository_and_subject_are_pinned() -> None:
    """A cloud role trusts one repository's environment: another repository's token, valid in every
    other respect, is refused."""
    github = corpus.provider("github")
    signer, claims = github.signers[0], github.claims(int(time.time()))
    verdicts = await _verdicts(
        github,
        {
            "pinned repository": (signer, claims),
            "another repository": (
                signer,
                claims | {"repository": "evil-org/octo-repo", "sub": "repo:evil-org/octo-repo:environment:prod"},
            ),
        },
        issuer=github.issuer,
        audience=github.audience,
        claim_values={"repository": ("octo-org/octo-repo",), "sub": ("repo:octo-org/octo-repo:environment:prod",)},
    )
    assert verdicts == {"pinned repository": "verified", "another repository": "claim_mismatch"}
