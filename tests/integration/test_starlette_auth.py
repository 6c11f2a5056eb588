"""jwks_cache.starlette and jwks_cache.fastapi: bearer tokens verified, RFC 6750 answers, on asyncio and trio."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Security
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
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

from jwks_cache import ProviderState, Registry
from jwks_cache.fastapi import BearerToken, path_param
from jwks_cache.starlette import BearerBackend, TokenUser, header, lifespan, on_auth_error, open_registry
from jwks_cache.testing import LocalIdentityProvider

Claims = dict[str, Any]


def providers(idps: list[LocalIdentityProvider]) -> list[Any]:
    acme, globex = idps
    return [config_for(acme, tenant="acme", audience=AUDIENCE), config_for(globex, tenant="globex", audience=AUDIENCE)]


# -- FastAPI ---------------------------------------------------------------------------------------

acme_token = BearerToken(tenant="acme", provider="idp")
any_tenant = BearerToken(tenant=path_param("tenant"), provider="idp", scheme_name="TenantToken")
admins = BearerToken(tenant="acme", provider="idp", roles=["admin"], scheme_name="AdminToken")


async def writer(claims: Annotated[Claims, Security(acme_token, scopes=["orders:write"])]) -> Claims:
    """A dependency asking for a scope of its own, on top of its route's."""
    return claims


def make_fastapi(idps: list[LocalIdentityProvider], **options: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan(providers(idps), registry=loopback_registry, **options))

    @app.get("/whoami")
    async def whoami(claims: Annotated[Claims, Security(acme_token)]) -> Claims:
        return {"user": claims["sub"], "aud": claims["aud"]}

    @app.get("/orders")
    async def orders(claims: Annotated[Claims, Security(acme_token, scopes=["orders:read"])]) -> str:
        return "orders"

    @app.post("/orders")
    async def new_order(claims: Annotated[Claims, Security(writer, scopes=["orders:read"])]) -> str:
        return "created"

    @app.get("/tenants/{tenant}/whoami")
    async def tenant_whoami(tenant: str, claims: Annotated[Claims, Security(any_tenant)]) -> str:
        return f"{tenant}:{claims['sub']}"

    @app.get("/admin")
    async def admin(claims: Annotated[Claims, Depends(admins)]) -> str:
        return "admin"

    return app


def challenge(response: Any) -> str:
    return str(response.headers.get("www-authenticate"))


def test_fastapi_good_token_gives_claims(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_fastapi(idps), backend=backend) as client:
        response = client.get("/whoami", headers=bearer(token(idps[0])))
    assert response.status_code == 200
    assert response.json() == {"user": "alice", "aud": AUDIENCE}


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (forged, "bad_signature"),
        (lambda idp: token(idp, exp=1_000_000), "expired"),
        (lambda idp: token(idp, aud="billing"), "audience_mismatch"),
    ],
)
def test_fastapi_invalid_tokens_get_401(
    idps: list[LocalIdentityProvider], backend: str, make_token: Any, reason: str
) -> None:
    with TestClient(make_fastapi(idps), backend=backend) as client:
        response = client.get("/whoami", headers=bearer(make_token(idps[0])))
    assert response.status_code == 401
    assert challenge(response) == f'Bearer error="invalid_token", error_description="{reason}"'


def test_fastapi_token_of_another_tenant(idps: list[LocalIdentityProvider], backend: str) -> None:
    globex = idps[1]
    with TestClient(make_fastapi(idps), backend=backend) as client:
        theirs = client.get("/tenants/acme/whoami", headers=bearer(token(globex)))
        own = client.get("/tenants/globex/whoami", headers=bearer(token(globex)))
        default = client.get("/whoami", headers=bearer(token(globex)))
    assert theirs.status_code == 401
    assert 'error="invalid_token"' in challenge(theirs)
    assert own.text == '"globex:alice"'
    assert default.status_code == 401


def test_fastapi_missing_header_is_a_bare_challenge(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_fastapi(idps), backend=backend) as client:
        response = client.get("/whoami")
    assert response.status_code == 401
    assert challenge(response) == "Bearer"


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer two parts"])
def test_fastapi_malformed_bearer_header_is_400_invalid_request(
    idps: list[LocalIdentityProvider], backend: str, authorization: str
) -> None:
    with TestClient(make_fastapi(idps), backend=backend) as client:
        response = client.get("/whoami", headers={"authorization": authorization})
    assert response.status_code == 400
    assert challenge(response) == 'Bearer error="invalid_request", error_description="malformed_header"'


def test_fastapi_scopes_add_up_and_roles(idps: list[LocalIdentityProvider], backend: str) -> None:
    acme = idps[0]
    with TestClient(make_fastapi(idps), backend=backend) as client:
        lacking = client.get("/orders", headers=bearer(token(acme, scp=["profile"])))
        granted = client.get("/orders", headers=bearer(token(acme, scp=["orders:read"])))
        # the route asks for orders:read, its dependency for orders:write: both are required
        half = client.post("/orders", headers=bearer(token(acme, scope="orders:read")))
        both = client.post("/orders", headers=bearer(token(acme, scope="orders:read orders:write")))
        no_role = client.get("/admin", headers=bearer(token(acme)))
        role = client.get("/admin", headers=bearer(token(acme, roles=["admin"])))
    assert lacking.status_code == 403
    assert challenge(lacking) == 'Bearer error="insufficient_scope", scope="orders:read"'
    assert granted.status_code == 200
    assert half.status_code == 403
    # RFC 6750 §3: the scope the resource requires (the enclosing dependency's and the route's)
    assert challenge(half) == 'Bearer error="insufficient_scope", scope="orders:read orders:write"'
    assert both.status_code == 200
    assert no_role.status_code == 403
    assert challenge(no_role) == 'Bearer error="insufficient_scope"'
    assert role.status_code == 200


def test_fastapi_unavailable_keys_are_503(idps: list[LocalIdentityProvider], backend: str) -> None:
    idps[0].fail(404)
    with TestClient(make_fastapi(idps, warm_timeout=None), backend=backend) as client:
        response = client.get("/whoami", headers=bearer(token(idps[0])))
    assert (response.status_code, response.headers.get("retry-after")) == (503, "5")
    assert "www-authenticate" not in response.headers


def test_fastapi_openapi_shows_the_bearer_schemes(idps: list[LocalIdentityProvider]) -> None:
    with TestClient(make_fastapi(idps)) as client:
        schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token of a registered identity provider, verified by jwks-cache.",
    }
    assert set(schemes) == {"BearerToken", "TenantToken", "AdminToken"}
    assert schema["paths"]["/orders"]["get"]["security"] == [{"BearerToken": ["orders:read"]}]


def test_fastapi_without_warming_the_first_request_waits_for_the_fetch(idp_thread: IdpThread, backend: str) -> None:
    acme = idp_thread.idps[0]
    acme.stall(math.inf)  # the registration's first fetch is held at the identity provider
    seen: list[Registry] = []
    app = make_fastapi(idp_thread.idps, warm_timeout=None)

    @app.get("/registry")
    async def registry_route(request: Request) -> str:
        seen.append(request.state.jwks_registry)
        return "ok"

    arrivals = Arrivals(app)
    with TestClient(arrivals, backend=backend) as client:
        assert client.get("/registry").status_code == 200  # serving already, with no key in
        assert seen[0].status("acme", "idp").state is ProviderState.LOADING
        answered_early, response = held_request(
            lambda: client.get("/whoami", headers=bearer(token(acme))),
            arrived=lambda: arrivals.count == 2,
            release=lambda: idp_thread.release(acme),
        )
        assert not answered_early
        assert response.status_code == 200
        assert acme.request_count == 1  # the request joined the first fetch


def test_fastapi_warming_fetches_before_serving(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_fastapi(idps), backend=backend) as client:
        assert [idp.request_count for idp in idps] == [1, 1]
        assert client.get("/whoami", headers=bearer(token(idps[0]))).status_code == 200
        assert idps[0].request_count == 1


def test_cold_provider_after_warming_is_logged(idps: list[LocalIdentityProvider], backend: str) -> None:
    idps[1].fail(404)
    with recorded_warnings() as records, TestClient(make_fastapi(idps), backend=backend):
        pass
    assert [r.getMessage() for r in records] == [
        f"jwks-cache: globex/idp has no signing keys yet (GET {idps[1].jwks_url}: HTTP 404); its requests wait for a fetch"
    ]


def test_fastapi_providers_from_a_serve_config_file(idps: list[LocalIdentityProvider], tmp_path: Path) -> None:
    acme = idps[0]
    config = tmp_path / "jwks.toml"
    config.write_text(
        "[registry]\nrequire_https = false\nallow_private_networks = true\n\n"
        f'[[providers]]\ntenant = "acme"\nprovider = "idp"\njwks_url = "{acme.jwks_url}"\naudience = "{AUDIENCE}"\n'
    )
    app = FastAPI(lifespan=lifespan(config_file=config))

    @app.get("/whoami")
    async def whoami(claims: Annotated[Claims, Security(acme_token)]) -> str:
        return str(claims["sub"])

    with TestClient(app) as client:
        assert client.get("/whoami", headers=bearer(token(acme))).json() == "alice"


def test_fastapi_own_lifespan_with_app_state(idps: list[LocalIdentityProvider]) -> None:
    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        async with open_registry(providers(idps), registry=loopback_registry) as reg:
            app.state.jwks_registry = reg
            yield

    app = FastAPI(lifespan=own)

    @app.get("/whoami")
    async def whoami(claims: Annotated[Claims, Security(acme_token)]) -> str:
        return str(claims["sub"])

    with TestClient(app) as client:
        assert client.get("/whoami", headers=bearer(token(idps[0]))).json() == "alice"
    with TestClient(app) as client:  # the lifespan makes a new Registry each time it runs
        assert client.get("/whoami", headers=bearer(token(idps[0]))).json() == "alice"
    outside = TestClient(app).get("/whoami", headers=bearer(token(idps[0])))  # no lifespan: no registry
    assert (outside.status_code, outside.headers.get("retry-after")) == (503, "5")


# -- Starlette -------------------------------------------------------------------------------------


async def whoami(request: Request) -> JSONResponse:
    user: TokenUser = request.user
    return JSONResponse({"user": user.display_name, "scopes": request.auth.scopes, "aud": user.claims["aud"]})


@requires("orders:read")
async def orders(request: Request) -> PlainTextResponse:
    return PlainTextResponse("orders")


def make_starlette(idps: list[LocalIdentityProvider], **backend_options: Any) -> Starlette:
    backend_options.setdefault("tenant", "acme")
    backend_options.setdefault("provider", "idp")
    auth = BearerBackend(**backend_options)
    return Starlette(
        routes=[Route("/whoami", whoami), Route("/orders", orders)],
        lifespan=lifespan(providers(idps), registry=loopback_registry),
        middleware=[Middleware(AuthenticationMiddleware, backend=auth, on_error=on_auth_error)],
    )


def test_starlette_good_token_sets_user_and_scopes(idps: list[LocalIdentityProvider], backend: str) -> None:
    with TestClient(make_starlette(idps), backend=backend) as client:
        response = client.get("/whoami", headers=bearer(token(idps[0], scope="b a")))
        scoped = client.get("/orders", headers=bearer(token(idps[0], scope="orders:read")))
        unscoped = client.get("/orders", headers=bearer(token(idps[0])))
    assert response.json() == {"user": "alice", "scopes": ["a", "b"], "aud": AUDIENCE}
    assert scoped.status_code == 200
    assert unscoped.status_code == 403  # Starlette's own @requires answer


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [(forged, "bad_signature"), (lambda idp: token(idp, exp=1_000_000), "expired")],
)
def test_starlette_invalid_tokens_get_401(
    idps: list[LocalIdentityProvider], backend: str, make_token: Any, reason: str
) -> None:
    with TestClient(make_starlette(idps), backend=backend) as client:
        response = client.get("/whoami", headers=bearer(make_token(idps[0])))
        missing = client.get("/whoami")
    assert response.status_code == 401
    assert challenge(response) == f'Bearer error="invalid_token", error_description="{reason}"'
    assert missing.status_code == 401
    assert challenge(missing) == "Bearer"


def test_starlette_tenant_from_a_header_and_optional(idps: list[LocalIdentityProvider], backend: str) -> None:
    globex = idps[1]
    app = make_starlette(idps, tenant=header("x-tenant"), optional=True)
    with TestClient(app, backend=backend) as client:
        own = client.get("/whoami", headers={**bearer(token(globex)), "x-tenant": "globex"})
        theirs = client.get("/whoami", headers={**bearer(token(globex)), "x-tenant": "acme"})
        none = client.get("/whoami", headers=bearer(token(globex)))
        anonymous = client.get("/orders")
    assert own.status_code == 200
    assert theirs.status_code == 401
    assert none.status_code == 401
    assert challenge(none) == 'Bearer error="invalid_token", error_description="not_registered"'
    assert anonymous.status_code == 403  # optional: no token is anonymous, @requires refuses


def test_starlette_warms_and_shares_the_state(idps: list[LocalIdentityProvider], backend: str) -> None:
    seen: list[Registry] = []

    async def registry_route(request: Request) -> PlainTextResponse:
        seen.append(request.state.jwks_registry)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/registry", registry_route)], lifespan=lifespan(providers(idps), registry=loopback_registry)
    )
    with TestClient(app, backend=backend) as client:
        # pre-warmed before the first request: both providers' keys are in
        assert [idp.request_count for idp in idps] == [1, 1]
        assert client.get("/registry").status_code == 200
        assert {s.state for s in seen[0].statuses()} == {ProviderState.READY}
