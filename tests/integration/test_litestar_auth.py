"""jwks_cache.litestar: the plugin verifies bearer tokens and answers RFC 6750, on asyncio and trio."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient
from tests.helpers import config_for, loopback_registry
from tests.web_helpers import (
    AUDIENCE,
    Arrivals,
    IdpThread,
    bearer,
    forged,
    held_request,
    recorded_warnings,
    token,
)

from jwks_cache import ConfigError, ProviderState
from jwks_cache.litestar import TENANT_OPT, JwksAuth, path_param, requires_roles, requires_scopes
from jwks_cache.testing import LocalIdentityProvider

ADMIN_TOKEN = "admin-token-0123456789abcdef"


@get("/whoami")
async def whoami(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"user": request.user["sub"], "aud": request.auth["aud"]}


@get("/tenants/{tenant:str}/whoami", opt={TENANT_OPT: path_param("tenant")})
async def tenant_whoami(request: Request[Any, Any, Any]) -> str:
    return f"{request.path_params['tenant']}:{request.auth['sub']}"


@get("/orders", guards=[requires_scopes("orders:read")])
async def orders() -> str:
    return "orders"


@get("/admin", guards=[requires_roles("admin")])
async def admin() -> str:
    return "admin"


@get("/public", opt={"exclude_from_auth": True})
async def public() -> str:
    return "public"


def make_app(idps: list[LocalIdentityProvider], **options: Any) -> Litestar:
    """Tenant acme (the default) and globex, each with its own identity provider."""
    acme, globex = idps
    options.setdefault("tenant", "acme")
    options.setdefault("provider", "idp")
    providers = [
        config_for(acme, tenant="acme", audience=AUDIENCE),
        config_for(globex, tenant="globex", audience=AUDIENCE),
    ]
    auth = JwksAuth(providers, registry=loopback_registry, **options)
    return Litestar([whoami, tenant_whoami, orders, admin, public], plugins=[auth])


def challenge(response: Any) -> str:
    return str(response.headers.get("www-authenticate"))


def test_good_token_gives_claims_and_user(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/whoami", headers=bearer(token(idps[0])))
    assert response.status_code == 200
    assert response.json() == {"user": "alice", "aud": AUDIENCE}


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (forged, "bad_signature"),
        (lambda idp: token(idp, exp=1_000_000), "expired"),
        (lambda idp: token(idp, aud="billing"), "audience_mismatch"),
        (lambda idp: "not-a-jwt", "malformed"),
    ],
)
def test_invalid_tokens_get_401_invalid_token(
    idps: list[LocalIdentityProvider], backend: str, make_token: Any, reason: str
) -> None:
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/whoami", headers=bearer(make_token(idps[0])))
    assert response.status_code == 401
    assert challenge(response) == f'Bearer error="invalid_token", error_description="{reason}"'
    assert response.json()["detail"] == f"invalid token ({reason})"


def test_token_of_another_tenant_is_refused(idps: list[LocalIdentityProvider], backend: str) -> None:
    globex = idps[1]
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        theirs = client.get("/tenants/acme/whoami", headers=bearer(token(globex)))
        own = client.get("/tenants/globex/whoami", headers=bearer(token(globex)))
        unknown = client.get("/tenants/initech/whoami", headers=bearer(token(globex)))
    assert theirs.status_code == 401
    assert 'error="invalid_token"' in challenge(theirs)
    assert own.status_code == 200
    assert own.text == "globex:alice"
    assert unknown.status_code == 401
    assert challenge(unknown) == 'Bearer error="invalid_token", error_description="not_registered"'


@pytest.mark.parametrize("authorization", [None, "Basic YWxpY2U6c2VjcmV0"])
def test_no_bearer_token_gets_a_bare_challenge(
    idps: list[LocalIdentityProvider], backend: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/whoami", headers=headers)
        public_response = client.get("/public")
    assert response.status_code == 401
    assert challenge(response) == "Bearer"  # RFC 6750 §3.1: no error code without credentials
    assert public_response.status_code == 200


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer   ", "Bearer two parts"])
def test_malformed_bearer_header_is_400_invalid_request(
    idps: list[LocalIdentityProvider], backend: str, authorization: str
) -> None:
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/whoami", headers={"authorization": authorization})
    assert response.status_code == 400
    assert challenge(response) == 'Bearer error="invalid_request", error_description="malformed_header"'


def test_missing_scope_or_role_is_403_insufficient_scope(idps: list[LocalIdentityProvider], backend: str) -> None:
    acme = idps[0]
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        lacking = client.get("/orders", headers=bearer(token(acme, scope="profile")))
        granted = client.get("/orders", headers=bearer(token(acme, scope="profile orders:read")))
        no_role = client.get("/admin", headers=bearer(token(acme, roles=["reader"])))
        role = client.get("/admin", headers=bearer(token(acme, roles=["admin"])))
    assert lacking.status_code == 403
    assert challenge(lacking) == 'Bearer error="insufficient_scope", scope="orders:read"'
    assert granted.status_code == 200
    assert no_role.status_code == 403
    assert challenge(no_role) == 'Bearer error="insufficient_scope"'
    assert "'admin'" in no_role.json()["detail"]
    assert role.status_code == 200


def test_unavailable_keys_are_503(idps: list[LocalIdentityProvider], backend: str) -> None:
    acme = idps[0]
    acme.fail(404)  # not transient: the cold lookup fails at once, no retries
    with TestClient(make_app(idps, warm_timeout=None), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/whoami", headers=bearer(token(acme)))
    assert (response.status_code, response.headers.get("retry-after")) == (503, "5")
    assert "www-authenticate" not in response.headers


def test_without_warming_the_first_request_waits_for_the_fetch(idp_thread: IdpThread, backend: str) -> None:
    acme = idp_thread.idps[0]
    acme.stall(math.inf)  # the registration's first fetch is held at the identity provider
    app = make_app(idp_thread.idps, warm_timeout=None)
    arrivals = Arrivals(app)
    with TestClient(arrivals, backend=backend) as client:  # type: ignore[arg-type]
        # serving already, with no key in: the first request waits for that fetch, and sends none of its own
        registry = app.state["jwks_registry"]
        assert registry.status("acme", "idp").state is ProviderState.LOADING
        answered_early, response = held_request(
            lambda: client.get("/whoami", headers=bearer(token(acme))),
            arrived=lambda: arrivals.count == 1,
            release=lambda: idp_thread.release(acme),
        )
        assert not answered_early
        assert response.status_code == 200
        assert acme.request_count == 1


def test_warming_fetches_every_provider_before_serving(idps: list[LocalIdentityProvider], backend: str) -> None:
    app = make_app(idps)
    with TestClient(app, backend=backend) as client:  # type: ignore[arg-type]
        # started, no request yet: both providers' keys are already in
        assert [idp.request_count for idp in idps] == [1, 1]
        states = {s.tenant: s.state for s in app.state["jwks_registry"].statuses()}
        assert states == {"acme": ProviderState.READY, "globex": ProviderState.READY}
        assert client.get("/whoami", headers=bearer(token(idps[0]))).status_code == 200
        assert idps[0].request_count == 1


def test_a_provider_still_cold_after_warming_is_logged(idps: list[LocalIdentityProvider], backend: str) -> None:
    idps[1].fail(404)
    with recorded_warnings() as records, TestClient(make_app(idps), backend=backend):  # type: ignore[arg-type]
        pass
    assert [r.getMessage() for r in records] == [
        f"jwks-cache: globex/idp has no signing keys yet (GET {idps[1].jwks_url}: HTTP 404); its requests wait for a fetch"
    ]


def test_openapi_shows_the_bearer_scheme(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_app(idps), backend=backend) as client:  # type: ignore[arg-type]
        response = client.get("/schema/openapi.json")  # the schema needs no token
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http",
        "scheme": "Bearer",
        "bearerFormat": "JWT",
        "description": "A token of a registered identity provider, verified by jwks-cache.",
    }
    assert {"BearerToken": []} in schema["security"]


def test_user_handler_require_claims_and_issuer(idps: list[LocalIdentityProvider], backend: str) -> None:
    acme = idps[0]

    async def user_of(claims: dict[str, Any], _: Any) -> dict[str, Any] | None:
        return {"sub": claims["sub"].upper()} if claims["sub"] != "nobody" else None

    app = make_app(idps, retrieve_user_handler=user_of, require_claims=["sub"], accepted_issuers=[acme.issuer])
    with TestClient(app, backend=backend) as client:  # type: ignore[arg-type]
        good = client.get("/whoami", headers=bearer(token(acme)))
        nobody = client.get("/whoami", headers=bearer(token(acme, sub="nobody")))
        other_issuer = client.get("/whoami", headers=bearer(token(acme, iss="https://elsewhere.example")))
    assert good.json()["user"] == "ALICE"
    assert nobody.status_code == 401
    assert other_issuer.status_code == 401
    assert challenge(other_issuer) == 'Bearer error="invalid_token", error_description="issuer_mismatch"'


def test_control_plane_is_mounted_with_its_own_token(idps: list[LocalIdentityProvider], backend: str) -> None:
    app = make_app(idps, control_plane_path="/admin/jwks", admin_token=ADMIN_TOKEN)
    with TestClient(app, backend=backend) as client:  # type: ignore[arg-type]
        status = client.get("/admin/jwks/status", headers=bearer(ADMIN_TOKEN))
        anonymous = client.get("/admin/jwks/status")
    assert status.status_code == 200
    assert {p["tenant"] for p in status.json()} == {"acme", "globex"}
    assert anonymous.status_code == 401  # the control plane's own answer, not the plugin's


def test_providers_from_a_serve_config_file(idps: list[LocalIdentityProvider], backend: str, tmp_path: Path) -> None:
    acme = idps[0]
    config = tmp_path / "jwks.toml"
    config.write_text(
        "[registry]\nrequire_https = false\nallow_private_networks = true\n\n"
        f'[[providers]]\ntenant = "acme"\nprovider = "okta"\njwks_url = "{acme.jwks_url}"\naudience = "{AUDIENCE}"\n'
    )
    # one provider in the file: the plugin needs no tenant/provider
    app = Litestar([whoami], plugins=[JwksAuth(config_file=config)])
    with TestClient(app, backend=backend) as client:  # type: ignore[arg-type]
        assert acme.request_count == 1
        assert client.get("/whoami", headers=bearer(token(acme))).status_code == 200


def test_config_file_and_registry_factory_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config_file and registry"):
        JwksAuth(config_file=tmp_path / "x.toml", registry=loopback_registry)
