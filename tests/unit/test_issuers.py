"""Issuer matching (exact, several, {tenantid} templates), tenants, claim values and their messages.

Tokens here are unsigned: these rules run after the signature verified, on the decoded claims, so
check_claims is called on a parsed token directly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jwks_cache import ConfigError, ProviderConfig, TokenError
from jwks_cache._issuers import discovery_accepts, multi_tenant_forms, registration_issuers, template_problem
from jwks_cache._jose._jwks import parse_jwks
from jwks_cache._jose._jws import check_claims, check_key_issuer, parse_jws

NOW = 1_700_000_000.0
ENTRA = "https://login.microsoftonline.com/{tenantid}/v2.0"
V1 = "https://sts.windows.net/{tenantid}/"
TID = "9188040d-6c67-4c5b-b112-36a304b66dad"
OTHER_TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'sig')}"


def check(claims: dict[str, Any], **options: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"now": NOW, "leeway": 0.0, "audience": None, "issuer": None} | options
    return check_claims(parse_jws(_token(claims)), **arguments)


def refusal(claims: dict[str, Any], **options: Any) -> TokenError:
    with pytest.raises(TokenError) as info:
        check(claims, **options)
    return info.value


# --- several issuers, and templates ----------------------------------------------------------------


@pytest.mark.parametrize("iss", ["https://accounts.google.com", "accounts.google.com"])
def test_either_of_googles_issuers_is_accepted(iss: str) -> None:
    assert check({"iss": iss}, issuer=("https://accounts.google.com", "accounts.google.com"))["iss"] == iss


def test_an_issuer_outside_the_list_is_refused_and_the_message_names_the_expected_ones() -> None:
    error = refusal({"iss": "https://evil.example"}, issuer=("https://accounts.google.com", "accounts.google.com"))
    assert error.reason == "issuer_mismatch"
    assert "'https://accounts.google.com', 'accounts.google.com'" in str(error)
    assert "evil" not in str(error)  # the token's own claim is never quoted


def test_a_missing_iss_says_so_and_names_the_expected_issuer() -> None:
    error = refusal({"sub": "alice"}, issuer="https://id.example")
    assert (error.reason, str(error)) == (
        "issuer_mismatch",
        "token lacks iss, which must match the expected issuer 'https://id.example'",
    )


def test_a_template_matches_with_the_tokens_tid() -> None:
    iss = f"https://login.microsoftonline.com/{TID}/v2.0"
    assert check({"iss": iss, "tid": TID}, issuer=ENTRA)["tid"] == TID


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": f"https://login.microsoftonline.com/{TID}/v2.0", "tid": OTHER_TID},  # another tenant's tid
        {"iss": f"https://login.microsoftonline.com/{TID}/v2.0"},  # no tid
        {"iss": "https://login.microsoftonline.com/{tenantid}/v2.0", "tid": TID},  # the template itself
        {"iss": "https://login.microsoftonline.com/{tenantid}/v2.0"},
        {"iss": f"https://login.microsoftonline.com/{TID.upper()}/v2.0", "tid": TID},  # byte-equal only
    ],
)
def test_a_template_needs_iss_equal_to_it_filled_with_tid(claims: dict[str, Any]) -> None:
    assert refusal(claims, issuer=ENTRA).reason == "issuer_mismatch"


@pytest.mark.parametrize(
    "tid",
    [
        "../evil",
        "..",
        "a/b",
        "/",
        "x/../../evil.example/y",
        "a%2Fb",
        "%2e%2e",
        "a.b",
        "a?b",
        "a#b",
        "a@b",
        "a:b",
        "a b",
        "a\nb",
        "",
        "-leading-dash",
        "x" * 65,
        "١٢٣",  # non-ASCII digits are digits to str.isdigit, not tenant ids
        7,
        ["t"],
        None,
    ],
)
def test_tid_cannot_inject_url_syntax_into_a_template(tid: object) -> None:
    """Even a token whose iss equals the template filled with that tid verbatim is refused."""
    filled = ENTRA.replace("{tenantid}", tid) if isinstance(tid, str) else ENTRA
    for iss in (filled, f"https://login.microsoftonline.com/{TID}/v2.0"):
        assert refusal({"iss": iss, "tid": tid}, issuer=ENTRA).reason == "issuer_mismatch"


def test_the_longest_plain_tenant_id_is_accepted() -> None:
    tid = "t" * 64
    assert check({"iss": ENTRA.replace("{tenantid}", tid), "tid": tid}, issuer=ENTRA)["tid"] == tid


def test_registration_issuers_add_the_multi_tenant_template_and_the_accepted_ones() -> None:
    common = "https://login.microsoftonline.com/common/v2.0"
    assert registration_issuers(common, (V1,)) == (common, ENTRA, V1)
    assert registration_issuers("https://accounts.google.com", ("accounts.google.com",)) == (
        "https://accounts.google.com",
        "accounts.google.com",
    )
    assert registration_issuers(None, (V1, V1)) == (V1,)
    assert registration_issuers(None, ()) == ()


# --- allowed tenants -------------------------------------------------------------------------------


def test_allowed_tenants_limit_which_tids_get_in() -> None:
    claims = {"iss": ENTRA.replace("{tenantid}", TID), "tid": TID}
    assert check(claims, issuer=ENTRA, tenants=(TID,))["tid"] == TID
    error = refusal(claims, issuer=ENTRA, tenants=(OTHER_TID,))
    assert (error.reason, str(error)) == (
        "tenant_not_allowed",
        f"token tenant (tid) is not one of the allowed tenants '{OTHER_TID}'",
    )
    for tid in (None, 7, [OTHER_TID], {"t": 1}):  # absent or not a string: never allowed, never a TypeError
        assert refusal({"tid": tid}, tenants=(OTHER_TID,)).reason == "tenant_not_allowed"


# --- claim values ----------------------------------------------------------------------------------

COGNITO = {"client_id": ("app-client",), "token_use": ("access",)}


def test_claim_values_accept_a_listed_value() -> None:
    claims = check({"client_id": "app-client", "token_use": "access"}, claim_values=COGNITO)
    assert claims["client_id"] == "app-client"


@pytest.mark.parametrize(
    ("claims", "reason", "message"),
    [
        (
            {"client_id": "other-client", "token_use": "access"},
            "claim_mismatch",
            "token claim 'client_id' does not hold the accepted value 'app-client'",
        ),
        (
            {"client_id": "app-client", "token_use": "id"},
            "claim_mismatch",
            "token claim 'token_use' does not hold the accepted value 'access'",
        ),
        ({"token_use": "access"}, "missing_claim", "token lacks the required claim 'client_id'"),
        ({"client_id": None, "token_use": "access"}, "claim_mismatch", None),
        ({"client_id": 7, "token_use": "access"}, "claim_mismatch", None),
        ({"client_id": {"app-client": 1}, "token_use": "access"}, "claim_mismatch", None),
        ({"client_id": [], "token_use": "access"}, "claim_mismatch", None),
        ({"client_id": ["x", 1, None], "token_use": "access"}, "claim_mismatch", None),
    ],
)
def test_claim_values_refusals(claims: dict[str, Any], reason: str, message: str | None) -> None:
    error = refusal(claims, claim_values=COGNITO)
    assert error.reason == reason
    if message is not None:
        assert str(error) == message
    assert "other-client" not in str(error) and "'id'" not in str(error)


def test_an_array_claim_matches_when_any_element_is_accepted() -> None:
    rule = {"groups": ("admins", "ops")}
    assert check({"groups": ["users", "ops"]}, claim_values=rule)["groups"] == ["users", "ops"]
    error = refusal({"groups": ["users"]}, claim_values=rule)
    assert str(error) == "token claim 'groups' does not hold one of the accepted values 'admins', 'ops'"


def test_messages_bound_long_lists_of_expected_values() -> None:
    values = tuple(f"client-{n}" for n in range(40))
    message = str(refusal({"azp": "x"}, claim_values={"azp": values}))
    assert "'client-4' and 35 more" in message
    assert len(message) < 400


def test_audience_mismatch_names_the_expected_audience_not_the_tokens() -> None:
    error = refusal({"aud": "someone-else"}, audience="api://orders")
    assert str(error) == "token audience does not match the expected audience 'api://orders'"
    error = refusal({"sub": "alice"}, audience=("a", "b"))
    assert str(error) == "token lacks aud, which must match one of the expected audiences 'a', 'b'"


# --- keys published with their own issuer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key_issuer", "claims", "ok"),
    [
        (ENTRA, {"iss": ENTRA.replace("{tenantid}", TID), "tid": TID}, True),
        (ENTRA, {"iss": ENTRA.replace("{tenantid}", TID), "tid": OTHER_TID}, False),
        (ENTRA, {"iss": ENTRA.replace("{tenantid}", TID)}, False),  # no tid: the template cannot be filled
        (ENTRA, {"iss": ENTRA.replace("{tenantid}", "../x"), "tid": "../x"}, False),
        # a key of one tenant signs only that tenant's tokens
        (ENTRA.replace("{tenantid}", TID), {"iss": ENTRA.replace("{tenantid}", TID), "tid": TID}, True),
        (ENTRA.replace("{tenantid}", TID), {"iss": ENTRA.replace("{tenantid}", OTHER_TID), "tid": OTHER_TID}, False),
        # a v1 token under a key naming the v2 issuer: accepted when that is the registration's issuer
        (ENTRA, {"iss": V1.replace("{tenantid}", TID), "tid": TID}, True),
        (ENTRA.replace("{tenantid}", OTHER_TID), {"iss": V1.replace("{tenantid}", TID), "tid": TID}, False),
    ],
)
def test_a_key_with_its_own_issuer_verifies_only_that_issuers_tokens(
    key_issuer: str, claims: dict[str, Any], ok: bool
) -> None:
    registered = ("https://login.microsoftonline.com/common/v2.0", ENTRA)
    if ok:
        check_key_issuer(claims, key_issuer, registered)
    else:
        with pytest.raises(TokenError) as info:
            check_key_issuer(claims, key_issuer, registered)
        assert info.value.reason == "issuer_mismatch"
        assert repr(key_issuer) in str(info.value)


def test_a_v1_token_needs_the_registration_to_name_the_keys_issuer() -> None:
    claims = {"iss": V1.replace("{tenantid}", TID), "tid": TID}
    with pytest.raises(TokenError):
        check_key_issuer(claims, ENTRA, ())


def test_the_jwk_issuer_member_is_kept_and_a_non_string_one_skips_the_key() -> None:
    from tests.unit.test_jws import public_jwk

    key = public_jwk("rsa")
    body = json.dumps(
        {"keys": [{**key, "kid": "a", "issuer": ENTRA}, {**key, "kid": "b"}, {**key, "kid": "c", "issuer": 7}]}
    )
    table = parse_jwks(body.encode(), url="https://idp")
    assert {e.kid: e.issuer for e in table.entries} == {"a": ENTRA, "b": None}
    assert [(s.kid, s.reason) for s in table.skipped] == [("c", "non-string issuer")]


# --- discovery of multi-tenant endpoints -----------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "discovered"),
    [
        ("https://login.microsoftonline.com/common/v2.0", ENTRA),
        ("https://login.microsoftonline.com/organizations/v2.0", ENTRA),
        ("https://login.microsoftonline.com/consumers/v2.0", ENTRA),
        ("https://login.microsoftonline.us/common/v2.0", "https://login.microsoftonline.us/{tenantid}/v2.0"),
        (
            "https://login.partner.microsoftonline.cn/common/v2.0",
            "https://login.partner.microsoftonline.cn/{tenantid}/v2.0",
        ),
        ("https://login.example.com:8443/common/v2.0", "https://login.example.com:8443/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/common/v2.0"),
    ],
)
def test_discovery_accepts_the_template_of_a_multi_tenant_endpoint(configured: str, discovered: str) -> None:
    assert discovery_accepts(configured, discovered)


@pytest.mark.parametrize(
    ("configured", "discovered"),
    [
        # another scheme, host, port, or any other path segment changed
        ("https://login.microsoftonline.com/common/v2.0", "http://login.microsoftonline.com/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.evil.example/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://LOGIN.microsoftonline.com/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com:443/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/{tenantid}/v2.1"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/{tenantid}/v2.0/"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/{tenantid}"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/x/{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/{tenantid}/v2.0?x=1"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/common/{tenantid}"),
        # the placeholder elsewhere than in that segment's place, or more than a segment
        ("https://login.microsoftonline.com/common/v2.0", "https://{tenantid}/common/v2.0"),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/{tenantid}{tenantid}/v2.0",
        ),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/common{tenantid}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/{TenantId}/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/*/v2.0"),
        ("https://login.microsoftonline.com/common/v2.0", "https://login.microsoftonline.com/" + TID + "/v2.0"),
        # a configured issuer that is no multi-tenant endpoint gets no template
        ("https://login.microsoftonline.com/" + TID + "/v2.0", ENTRA),
        ("https://login.microsoftonline.com/Common/v2.0", ENTRA),
        ("https://login.microsoftonline.com/commons/v2.0", "https://login.microsoftonline.com/{tenantid}/v2.0"),
        ("https://acme.okta.com", "https://acme.okta.com/{tenantid}"),
    ],
)
def test_discovery_refuses_anything_looser(configured: str, discovered: str) -> None:
    assert not discovery_accepts(configured, discovered)


def test_multi_tenant_forms_keep_every_other_byte() -> None:
    assert multi_tenant_forms("https://login.example.com/tfp/common/v2.0/?p=x") == (
        "https://login.example.com/tfp/{tenantid}/v2.0/?p=x",
    )
    assert multi_tenant_forms("https://login.example.com/common/organizations") == (
        "https://login.example.com/{tenantid}/organizations",
        "https://login.example.com/common/{tenantid}",
    )
    assert multi_tenant_forms("HTTPS://login.example.com/common") == ()
    assert multi_tenant_forms("https://common.example.com/v2.0") == ()


# --- configuration ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {"tenant": "acme", "provider": "entra", "jwks_url": "https://login.example.com/keys"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": "https://{tenantid}.example.com/v2.0"}, "issuer with {tenantid} must be an absolute"),
        ({"issuer": "https://login.example.com/x{tenantid}/v2.0"}, "issuer must hold {tenantid} as one whole path"),
        ({"issuer": "https://login.example.com/{tenantid}/{tenantid}"}, "issuer may hold {tenantid} only once"),
        ({"issuer": "https://login.example.com/v2.0?t={tenantid}"}, "issuer must hold {tenantid} as one whole"),
        ({"jwks_url": None, "issuer": ENTRA}, "issuer with {tenantid} needs jwks_url"),
        ({"accepted_issuers": ("",)}, "accepted_issuers entries must be 1-2048 characters"),
        (
            {"accepted_issuers": ("sts.windows.net/{tenantid}/",)},
            "accepted_issuers with {tenantid} must be an absolute",
        ),
        ({"accepted_issuers": tuple(f"i{n}" for n in range(17))}, "accepted_issuers at most 16 entries"),
        ({"allowed_tenant_ids": ("../x",)}, "allowed_tenant_ids entries must be tenant ids"),
        ({"allowed_tenant_ids": ("",)}, "allowed_tenant_ids entries must be tenant ids"),
        ({"claim_values": {"client_id": ()}}, "claim_values must list 1-100 accepted values"),
        ({"claim_values": {"client_id": ("",)}}, "claim_values values must be 1-1024 characters"),
        ({"claim_values": {"": ("x",)}}, "claim_values claim names must be 1-64 characters"),
        ({"claim_values": {"exp": ("1",)}}, "claim_values cannot check exp, nbf or iat"),
        ({"claim_values": {f"c{n}": ("x",) for n in range(17)}}, "claim_values at most 16 claims"),
    ],
)
def test_configuration_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("{", r"\{").replace("}", r"\}").replace("?", r"\?")):
        ProviderConfig(**{**BASE, **changes})


def test_a_valid_configuration_keeps_its_values() -> None:
    config = ProviderConfig(
        **BASE,
        issuer=ENTRA,
        accepted_issuers=[V1],  # type: ignore[arg-type]
        allowed_tenant_ids=(TID,),
        claim_values={"azp": ["client"]},  # type: ignore[dict-item]
    )
    assert (config.accepted_issuers, config.claim_values) == ((V1,), {"azp": ("client",)})
    assert template_problem(ENTRA) is None


# --- the providers page ----------------------------------------------------------------------------


def test_every_recipe_on_the_providers_page_is_a_valid_configuration() -> None:
    """docs/providers.md is copied from: each of its Python blocks must run and build its configs."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    built: list[ProviderConfig] = []
    for block in blocks:
        namespace: dict[str, Any] = {}
        exec(compile(block, str(page), "exec"), namespace)  # our own documentation
        built += [value for value in namespace.values() if isinstance(value, ProviderConfig)]
    assert len(built) >= 13
    providers = {config.provider for config in built}
    assert {"google", "entra", "auth0", "okta", "keycloak", "cognito-access", "cognito-id"} <= providers
    assert {"pingone", "firebase", "github-actions", "cluster"} <= providers


def test_the_control_plane_accepts_the_new_fields_and_points_at_a_bad_one() -> None:
    from jwks_cache._asgi._fields import decode_registration
    from jwks_cache._asgi._plumbing import HttpProblem

    body = {"jwks_url": "https://login.example.com/keys", "accepted_issuers": [V1], "claim_values": {"azp": ["web"]}}
    config = decode_registration(json.dumps(body).encode(), "acme", "entra")
    assert (config.accepted_issuers, config.claim_values) == ((V1,), {"azp": ("web",)})
    bad = {**body, "allowed_tenant_ids": ["../x"]}
    with pytest.raises(HttpProblem) as info:
        decode_registration(json.dumps(bad).encode(), "acme", "entra")
    assert info.value.status == 422
    assert [error.pointer for error in info.value.errors] == ["#/allowed_tenant_ids"]
