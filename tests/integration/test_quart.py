"""The Quart extension (jwks_cache.quart) through Quart's test client; Quart runs on asyncio only."""

from __future__ import annotations

import time
from typing import Any

import pytest
from quart import Quart, Request

from helpers import PROVIDER, TENANT, config_for, loopback_registry
from jwks_cache import ConfigError, ProviderConfig
from jwks_cache.quart import JwksCache, current_claims, require_token
from jwks_cache.testing import LocalIdentityProvider


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _path_tenant(request: Request) -> str:
    return str((request.view_args or {})["tenant"])


def make_app(providers: list[ProviderConfig], *, warm_timeout: float = 10.0) -> Quart:
    app = Quart(__name__)
    JwksCache(app, providers=providers, warm_timeout=warm_timeout, registry_factory=loopback_registry)

    @app.get("/whoami")
    @require_token(tenant=TENANT, provider=PROVIDER)
    async def whoami() -> dict[str, Any]:
        return {"sub": current_claims["sub"]}

    @app.get("/orders")
    @require_token(tenant=TENANT, provider=PROVIDER, scopes=["orders:read"], roles=["clerk"])
    async def orders() -> dict[str, Any]:
        return {"for": current_claims["sub"]}

    @app.get("/tenants/<tenant>/whoami")
    @require_token(tenant=_path_tenant, provider=PROVIDER)
    async def tenant_whoami(tenant: str) -> dict[str, Any]:
        return {"tenant": tenant, "sub": current_claims["sub"]}

    return app


def mint(idp: LocalIdentityProvider, **claims: Any) -> str:
    return idp.mint({"sub": "alice", "exp": int(time.time()) + 600, **claims})


async def get(app: Quart, path: str, token: str | None) -> tuple[int, str | None, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await app.test_client().get(path, headers=headers)
    return response.status_code, response.headers.get("WWW-Authenticate"), await response.get_json()


async def test_tokens_are_answered_per_rfc_6750() -> None:
    async with LocalIdentityProvider() as idp, LocalIdentityProvider() as other_idp:
        app = make_app([config_for(idp), config_for(other_idp, tenant="other")])
        async with app.test_app():
            assert idp.request_count == 1  # pre-warmed at start-up
            good = mint(idp, scope="orders:read", roles=["clerk"])
            assert await get(app, "/whoami", good) == (200, None, {"sub": "alice"})
            assert await get(app, "/orders", good) == (200, None, {"for": "alice"})
            assert await get(app, "/tenants/acme/whoami", good) == (200, None, {"tenant": "acme", "sub": "alice"})

            status, challenge, body = await get(app, "/whoami", mint(idp, exp=int(time.time()) - 600))
            assert (status, challenge) == (401, 'Bearer error="invalid_token", error_description="expired"')
            assert body == {"error": "invalid_token", "error_description": "expired"}
            status, challenge, _ = await get(app, "/whoami", good[:-6] + "AAAAAA")
            assert (status, challenge) == (401, 'Bearer error="invalid_token", error_description="bad_signature"')
            # another tenant's token at this tenant's route, and this one's at an unknown tenant
            status, challenge, _ = await get(app, "/tenants/other/whoami", good)
            assert (status, challenge) == (401, 'Bearer error="invalid_token", error_description="bad_signature"')
            status, challenge, _ = await get(app, "/tenants/nobody/whoami", good)
            assert (status, challenge) == (401, 'Bearer error="invalid_token", error_description="not_registered"')

            # a missing role names no scope (roles are not OAuth scopes); a missing scope names the route's
            status, challenge, body = await get(app, "/orders", mint(idp, scope="orders:read"))
            assert (status, challenge, body["error"]) == (
                403,
                'Bearer error="insufficient_scope"',
                "insufficient_scope",
            )
            status, challenge, _ = await get(app, "/orders", mint(idp, roles=["clerk"]))
            assert (status, challenge) == (403, 'Bearer error="insufficient_scope", scope="orders:read"')

            assert await get(app, "/whoami", None) == (
                401,
                "Bearer",
                {"error_description": "a bearer token is required"},
            )
            response = await app.test_client().get("/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})
            assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, "Bearer")
            response = await app.test_client().get("/whoami", headers={"Authorization": "Bearer "})
            assert (response.status_code, response.headers["WWW-Authenticate"]) == (
                400,
                'Bearer error="invalid_request", error_description="malformed_header"',
            )


async def test_a_cold_start_serves_the_first_request_after_its_fetch() -> None:
    async with LocalIdentityProvider() as idp:
        app = make_app([config_for(idp)], warm_timeout=0)  # no pre-warming
        async with app.test_app():
            assert await get(app, "/whoami", mint(idp)) == (200, None, {"sub": "alice"})
            assert idp.request_count == 1


async def test_unavailable_keys_are_a_503() -> None:
    async with LocalIdentityProvider() as idp:
        idp.fail(404)
        app = make_app([config_for(idp)], warm_timeout=0.5)  # the failure ends the warm-up early
        async with app.test_app():
            status, challenge, body = await get(app, "/whoami", mint(idp))
            assert (status, challenge, body["error"]) == (503, None, "temporarily_unavailable")
            idp.recover()
            app.extensions["jwks_cache"].registry.request_refresh(TENANT, PROVIDER)
            for _ in range(200):  # bounded: the refresh lands within a few loop turns on loopback
                status, _, _ = await get(app, "/whoami", mint(idp))
                if status == 200:
                    break
            assert status == 200


async def test_outside_serving_and_outside_a_guarded_request() -> None:
    app = make_app([])
    extension = app.extensions["jwks_cache"]
    with pytest.raises(RuntimeError, match="serving"):
        _ = extension.registry
    async with app.test_request_context("/"):
        with pytest.raises(RuntimeError, match="require_token"):
            _ = current_claims["sub"]
    with pytest.raises(ConfigError, match="warm_timeout"):
        JwksCache(warm_timeout=-1)
    with pytest.raises(ConfigError, match="registry_factory"):
        JwksCache(registry_factory=loopback_registry, require_https=False)


async def test_init_app_and_a_new_registry_per_serving_period() -> None:
    async with LocalIdentityProvider() as idp:
        extension = JwksCache(providers=[config_for(idp)], registry_factory=loopback_registry)
        app = Quart(__name__)
        extension.init_app(app)

        @app.get("/")
        @require_token(tenant=TENANT, provider=PROVIDER)
        async def index() -> str:
            return str(current_claims["sub"])

        for _ in range(2):
            async with app.test_app():
                response = await app.test_client().get("/", headers={"Authorization": f"Bearer {mint(idp)}"})
                assert (response.status_code, await response.get_data(as_text=True)) == (200, "alice")
        assert idp.request_count == 2  # one fetch per serving period: each opened its own registry
