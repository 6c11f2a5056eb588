"""The recipes of docs/providers.md end to end, against a loopback IdP playing each provider.

Each test registers a provider the way the recipe says and mints the tokens that provider issues:
Google's two issuers, an Entra ID multi-tenant registration through discovery, Entra keys that carry
their own issuer, Cognito access tokens without ``aud``.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import Registry, SecurityError, TokenError
from jwks_cache.testing import LocalIdentityProvider

TID = "9188040d-6c67-4c5b-b112-36a304b66dad"
OTHER_TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now - 5, "exp": now + 300, **extra}


async def _reason(reg: Registry, token: str, **kwargs: Any) -> TokenError:
    with pytest.raises(TokenError) as info:
        await reg.verify(token, tenant=TENANT, provider=PROVIDER, **kwargs)
    return info.value


async def test_google_tokens_verify_under_either_documented_issuer() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(
                config_for(idp, issuer=idp.issuer, accepted_issuers=("accounts.google.com",), audience="client-1")
            )
            for iss in (idp.issuer, "accounts.google.com"):
                token = idp.mint(_claims(iss=iss, aud="client-1"))
                assert (await reg.verify(token, tenant=TENANT, provider=PROVIDER))["iss"] == iss
            stranger = idp.mint(_claims(iss="https://accounts.google.com.evil.example", aud="client-1"))
            error = await _reason(reg, stranger)
            assert error.reason == "issuer_mismatch"
            assert f"one of the expected issuers {idp.issuer!r}, 'accounts.google.com'" in str(error)
            assert "evil" not in str(error)
            # an issuer argument replaces the registration's, and may list several too
            bare = idp.mint(_claims(iss="accounts.google.com", aud="client-1"))
            assert await reg.verify(bare, tenant=TENANT, provider=PROVIDER, issuer=["x", "accounts.google.com"])
            assert (await _reason(reg, bare, issuer=idp.issuer)).reason == "issuer_mismatch"


async def test_entra_multi_tenant_registration_via_discovery_checks_iss_against_tid() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            template = f"{idp.base_url}/{{tenantid}}/v2.0"
            idp.discovery_document = {**idp.discovery_document, "issuer": template}
            common = f"{idp.base_url}/common/v2.0"
            await reg.register(
                config_for(idp, jwks_url=None, issuer=common, audience="api", allowed_tenant_ids=(TID, OTHER_TID))
            )

            def token(tid: Any, iss_tid: Any = None) -> str:
                return idp.mint(_claims(iss=template.replace("{tenantid}", iss_tid or tid), tid=tid, aud="api"))

            for tid in (TID, OTHER_TID):
                assert (await reg.verify(token(tid), tenant=TENANT, provider=PROVIDER))["tid"] == tid
            assert idp.discovery_count == 1
            assert [r.path for r in idp.requests][:1] == ["/common/v2.0/.well-known/openid-configuration"]
            # a tenant outside allowed_tenant_ids, an iss of another tenant, a tid that is not an id
            stranger = "0b2c3d4e-0000-4000-8000-000000000000"
            error = await _reason(reg, token(stranger))
            assert error.reason == "tenant_not_allowed"
            assert stranger not in str(error) and TID in str(error)
            assert (await _reason(reg, token(TID, iss_tid=OTHER_TID))).reason == "issuer_mismatch"
            for hostile in ("../common", "a/b", "a%2Fb", ""):
                assert (await _reason(reg, token(hostile, iss_tid=hostile or "x"))).reason == "issuer_mismatch"
            error = await _reason(reg, idp.mint(_claims(iss=common, aud="api")))  # no tid, not allowed
            assert error.reason == "tenant_not_allowed"


@pytest.mark.parametrize(
    "discovered",
    [
        "{base}/{{tenantid}}/v2.1",  # another segment changed
        "{base}/{{tenantid}}/v2.0/",
        "{base}/x/{{tenantid}}/v2.0",
        "http://localhost:{port}/{{tenantid}}/v2.0",  # another host
        "{base}/common{{tenantid}}/v2.0",
        "{base}/{TID}/v2.0",  # one tenant's issuer is not the template
    ],
)
async def test_discovery_refuses_a_looser_template(discovered: str) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            issuer = discovered.format(base=idp.base_url, port=idp.port, TID=TID)
            idp.discovery_document = {**idp.discovery_document, "issuer": issuer}
            await reg.register(config_for(idp, jwks_url=None, issuer=f"{idp.base_url}/common/v2.0"))
            with pytest.raises(SecurityError) as info:
                await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            assert repr(issuer) in str(info.value) and repr(f"{idp.base_url}/common/v2.0") in str(info.value)
            assert idp.request_count == 0  # the JWKS is never fetched


async def test_entra_keys_with_their_own_issuer_verify_only_that_issuers_tokens() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider(keys=1) as idp, loopback_registry() as reg:
            template = f"{idp.base_url}/{{tenantid}}/v2.0"
            v1 = f"{idp.base_url}/sts/{{tenantid}}/"
            shared = idp.add_key(members={"issuer": template})
            own = idp.add_key(members={"issuer": template.replace("{tenantid}", TID)})
            unrestricted = idp.kids[0]
            await reg.register(config_for(idp, issuer=template, accepted_issuers=(v1,), audience="api"))

            def token(kid: str, tid: str, iss: str = template) -> str:
                return idp.mint(_claims(iss=iss.replace("{tenantid}", tid), tid=tid, aud="api"), kid=kid)

            for kid in (shared, unrestricted):
                for tid in (TID, OTHER_TID):
                    assert await reg.verify(token(kid, tid), tenant=TENANT, provider=PROVIDER)
                    assert await reg.verify(token(kid, tid, iss=v1), tenant=TENANT, provider=PROVIDER)
            assert await reg.verify(token(own, TID), tenant=TENANT, provider=PROVIDER)
            assert await reg.verify(token(own, TID, iss=v1), tenant=TENANT, provider=PROVIDER)
            # the key of one tenant signing another tenant's token: refused, the key's issuer named
            for iss in (template, v1):
                error = await _reason(reg, token(own, OTHER_TID, iss=iss))
                assert error.reason == "issuer_mismatch"
                assert repr(template.replace("{tenantid}", TID)) in str(error)
                assert OTHER_TID not in str(error)
            # the shared key with a token whose tid disagrees with its iss
            forged = idp.mint(_claims(iss=template.replace("{tenantid}", TID), tid=OTHER_TID, aud="api"), kid=shared)
            assert (await _reason(reg, forged)).reason == "issuer_mismatch"


async def test_cognito_access_tokens_are_pinned_by_client_id_and_token_use() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(
                config_for(
                    idp,
                    issuer=idp.issuer,
                    claim_values={"client_id": ("app-client",), "token_use": ("access",)},
                    required_claims=("exp",),
                )
            )
            access = idp.mint(_claims(client_id="app-client", token_use="access", scope="orders/read"))
            assert (await reg.verify(access, tenant=TENANT, provider=PROVIDER))["client_id"] == "app-client"
            other = idp.mint(_claims(client_id="other-client", token_use="access"))
            error = await _reason(reg, other)
            assert (error.reason, str(error)) == (
                "claim_mismatch",
                "token claim 'client_id' does not hold the accepted value 'app-client'",
            )
            id_token = idp.mint(_claims(aud="app-client", token_use="id"))  # an ID token has aud, no client_id
            error = await _reason(reg, id_token, audience="app-client")
            assert (error.reason, str(error)) == ("missing_claim", "token lacks the required claim 'client_id'")
            no_use = idp.mint(_claims(client_id="app-client", token_use="id"))
            assert (await _reason(reg, no_use)).reason == "claim_mismatch"


async def test_an_audience_mismatch_names_the_configured_audience() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            await reg.register(config_for(idp, audience="api://orders"))
            error = await _reason(reg, idp.mint(_claims(aud="api://billing")))
            assert str(error) == "token audience does not match the expected audience 'api://orders'"
            await reg.register(config_for(idp))
            error = await _reason(reg, idp.mint(_claims(aud="api://billing")))
            assert "none is expected" in str(error) and "billing" not in str(error)
