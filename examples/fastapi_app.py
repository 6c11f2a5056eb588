"""A FastAPI app verifying bearer tokens with ``jwks_cache.fastapi``.

``lifespan(...)`` opens one Registry for the app's life and waits for the providers' keys before the
app serves; ``BearerToken`` is a security scheme (it shows in ``/docs``) whose dependency returns
the verified claims, asks for the scopes ``Security(..., scopes=[...])`` names, and answers
RFC 6750 (401 ``invalid_token``, 403 ``insufficient_scope``). The tenant of the second route comes
from its path: a token verifies only with that tenant's identity provider.

Run: ``python examples/fastapi_app.py`` (local identity providers and an in-process client, so it
needs no network). In a service, serve ``create_app(...)`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Security

from jwks_cache import ProviderConfig, Registry
from jwks_cache.fastapi import BearerToken, lifespan, path_param

Claims = Annotated[dict[str, Any], Security(BearerToken(tenant="acme", provider="local"))]
OrdersReader = Annotated[dict[str, Any], Security(BearerToken(tenant="acme", provider="local"), scopes=["orders:read"])]
TenantClaims = Annotated[dict[str, Any], Security(BearerToken(tenant=path_param("tenant"), provider="local"))]


def create_app(providers: Sequence[ProviderConfig], new_registry: Callable[[], Registry] = Registry) -> FastAPI:
    """The app; its lifespan makes a new Registry each time it runs (one can be entered only once)."""
    app = FastAPI(lifespan=lifespan(providers, registry=new_registry))

    @app.get("/whoami")
    async def whoami(claims: Claims) -> str:
        return f"hello {claims['sub']}"

    @app.get("/orders")
    async def orders(claims: OrdersReader) -> str:
        return f"orders of {claims['sub']}"

    @app.get("/tenants/{tenant}/whoami")
    async def tenant_whoami(tenant: str, claims: TenantClaims) -> str:
        return f"{claims['sub']} of {tenant}"

    return app


async def main() -> None:
    from jwks_cache.testing import LocalIdentityProvider

    async with LocalIdentityProvider() as acme, LocalIdentityProvider() as globex:
        providers = [
            ProviderConfig(tenant=name, provider="local", jwks_url=idp.jwks_url, require_https=False, audience="orders")
            for name, idp in (("acme", acme), ("globex", globex))
        ]
        app = create_app(providers, lambda: Registry(require_https=False, allow_private_networks=True))
        soon = int(time.time()) + 60
        alice = acme.mint({"sub": "alice", "aud": "orders", "exp": soon, "scope": "orders:read"})
        bob = acme.mint({"sub": "bob", "aud": "orders", "exp": soon})
        carol = globex.mint({"sub": "carol", "aud": "orders", "exp": soon})
        # What an ASGI server does: run the lifespan in one task, and hand each request a copy of its state.
        async with app.router.lifespan_context(app) as state:

            async def served(scope: Any, receive: Any, send: Any) -> None:
                await app({**scope, "state": dict(state or {})}, receive, send)

            transport = httpx.ASGITransport(served)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                for path, token in (
                    ("/whoami", alice),
                    ("/whoami", None),
                    ("/orders", alice),
                    ("/orders", bob),
                    ("/tenants/globex/whoami", carol),
                    ("/tenants/acme/whoami", carol),
                ):
                    headers = {"authorization": f"Bearer {token}"} if token else {}
                    response = await http.get(path, headers=headers)
                    print(f"GET {path}:", response.status_code, response.json() if response.is_success else "refused")
                    if not response.is_success:
                        print("  WWW-Authenticate:", response.headers["www-authenticate"])
                schema = (await http.get("/openapi.json")).json()
                print("OpenAPI security schemes:", ", ".join(schema["components"]["securitySchemes"]))


if __name__ == "__main__":
    asyncio.run(main())
