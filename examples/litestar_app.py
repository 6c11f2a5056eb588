"""A Litestar app verifying bearer tokens with the ``jwks_cache.litestar`` plugin.

The plugin opens one Registry in the app's lifespan and waits for the provider's keys before the
app serves; its middleware puts the verified claims on ``request.auth`` (and ``request.user``) or
answers RFC 6750 (401 with ``WWW-Authenticate: Bearer error="invalid_token"``, 403
``insufficient_scope`` from a guard). The control plane (``jwks_cache.asgi.create_app``) is
mounted under ``/admin/jwks`` over the same Registry, behind its own admin token.

Run: ``python examples/litestar_app.py`` (a local identity provider and an in-process client, so it
needs no network). In a service, serve ``create_app(...)`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from litestar import Litestar, Request, get

from jwks_cache import ProviderConfig, Registry
from jwks_cache.litestar import JwksAuth, requires_scopes
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"
ADMIN_PREFIX = "/admin/jwks"


@get("/whoami")
async def whoami(request: Request[dict[str, Any], dict[str, Any], Any]) -> str:
    return f"hello {request.user['sub']}"


@get("/orders", guards=[requires_scopes("orders:read")])
async def orders() -> str:
    return "your orders"


def create_app(
    provider: ProviderConfig, new_registry: Callable[[], Registry] = Registry, *, admin_token: str | None = None
) -> Litestar:
    """The app; the plugin makes a new Registry for each lifespan (one can be entered only once)."""
    auth = JwksAuth([provider], registry=new_registry, control_plane_path=ADMIN_PREFIX, admin_token=admin_token)
    return Litestar(route_handlers=[whoami, orders], plugins=[auth])


async def main() -> None:
    async with LocalIdentityProvider() as idp:
        admin_token = secrets.token_urlsafe(32)  # in production: from a secret store, never a literal
        provider = ProviderConfig(
            tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, audience="orders"
        )
        local = create_app(
            provider,
            lambda: Registry(require_https=False, allow_private_networks=True),
            admin_token=admin_token,
        )
        soon = int(time.time()) + 60
        good = idp.mint({"sub": "alice", "aud": "orders", "exp": soon, "scope": "profile"})
        expired = idp.mint({"sub": "bob", "aud": "orders", "exp": int(time.time()) - 60})
        # local.lifespan() runs the lifespan managers in this task, as a server's lifespan task would.
        # (ASGI has no one typing standard: Litestar's scopes are TypedDicts, httpx's mappings.)
        transport = httpx.ASGITransport(local)  # type: ignore[arg-type]
        async with local.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            for path, token in (("/whoami", good), ("/whoami", expired), ("/whoami", None), ("/orders", good)):
                headers = {"authorization": f"Bearer {token}"} if token else {}
                response = await http.get(path, headers=headers)
                body = response.text if response.is_success else response.json()["detail"]
                print(response.status_code, body)
                if not response.is_success:
                    print("  WWW-Authenticate:", response.headers["www-authenticate"])
            for path in ("/status", f"/tenants/{TENANT}/providers/{PROVIDER}/jwks"):
                # the control plane's reads need its token too (protect_reads, the default)
                response = await http.get(ADMIN_PREFIX + path, headers={"authorization": f"Bearer {admin_token}"})
                print(f"GET {ADMIN_PREFIX}{path}:", response.status_code)


if __name__ == "__main__":
    asyncio.run(main())
