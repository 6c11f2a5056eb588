"""A Quart app verifying bearer tokens with the ``jwks_cache.quart`` extension.

``JwksCache`` opens a Registry while the app serves (registering and pre-warming the provider),
and ``require_token`` turns the bearer token into verified claims (``current_claims``) or an
RFC 6750 refusal. Quart cannot mount an ASGI app, so ``with_control_plane`` puts a small
dispatcher in front of it that sends ``/admin/jwks`` to the control plane
(``jwks_cache.asgi.create_app``) over the same Registry.

Run: ``python examples/quart_app.py`` (a local identity provider and an in-process client, so it
needs no network). In a service, serve ``with_control_plane(create_app(...))`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from quart import Quart

from jwks_cache import ProviderConfig, Registry
from jwks_cache.asgi import create_app as create_control_plane
from jwks_cache.quart import JwksCache, current_claims, require_token
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"
ADMIN_PREFIX = "/admin/jwks"
#: ASGI has no one typing standard (Quart's scopes are hypercorn TypedDicts, the control plane takes any mapping).
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def create_app(
    provider: ProviderConfig, new_registry: Callable[[], Registry] = Registry, *, admin_token: str | None = None
) -> Quart:
    """The app; each serving period gets a new Registry (one can be entered only once) and control plane."""
    app = Quart(__name__)
    jwks = JwksCache(app, providers=[provider], registry_factory=new_registry, warm_timeout=5)

    @app.before_serving
    async def open_control_plane() -> None:
        # runs after JwksCache's hook (registered first): the registry is open
        app.extensions["jwks_cache.control_plane"] = create_control_plane(jwks.registry, admin_token=admin_token)

    @app.get("/whoami")
    @require_token(tenant=TENANT, provider=PROVIDER)
    async def whoami() -> str:
        return f"hello {current_claims['sub']}"

    return app


def with_control_plane(app: Quart, prefix: str = ADMIN_PREFIX) -> ASGIApp:
    """The ASGI app to serve: ``prefix`` and below go to the control plane, the rest (lifespan too) to ``app``."""

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        root_path = scope.get("root_path", "")
        path = scope.get("path", "")
        rest = path[len(root_path) :] if path.startswith(root_path) else path  # some servers strip root_path
        if scope["type"] in ("http", "websocket") and (rest == prefix or rest.startswith(prefix + "/")):
            # as Starlette's Mount does: root_path gains the prefix, path keeps it (the ASGI spec's form)
            mounted = {**scope, "root_path": root_path + prefix, "path": root_path + rest}
            await app.extensions["jwks_cache.control_plane"](mounted, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


async def main() -> None:
    async with LocalIdentityProvider() as idp:
        admin_token = secrets.token_urlsafe(32)  # in production: from a secret store, never a literal
        provider = ProviderConfig(
            tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, audience="orders"
        )
        app = create_app(
            provider,
            lambda: Registry(require_https=False, allow_private_networks=True),
            admin_token=admin_token,
        )
        good = idp.mint({"sub": "alice", "aud": "orders", "exp": int(time.time()) + 60})
        forged = good[:-6] + "AAAAAA"
        # test_app() runs the serving period, as a server would; requests then go through the
        # dispatcher, so the Quart routes and the control plane are one ASGI app, as when served.
        transport = httpx.ASGITransport(with_control_plane(app))
        async with app.test_app(), httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            for token in (good, forged, None):
                headers = {"authorization": f"Bearer {token}"} if token else {}
                response = await http.get("/whoami", headers=headers)
                body = response.text if response.is_success else _detail(response.json())
                print(response.status_code, body)
            for path in ("/status", f"/tenants/{TENANT}/providers/{PROVIDER}/jwks"):
                # the control plane's reads need its token too (protect_reads, the default)
                response = await http.get(ADMIN_PREFIX + path, headers={"authorization": f"Bearer {admin_token}"})
                print(f"GET {ADMIN_PREFIX}{path}:", response.status_code)


def _detail(body: dict[str, str]) -> str:
    description = body["error_description"]
    return f"invalid token ({description})" if body.get("error") == "invalid_token" else description


if __name__ == "__main__":
    asyncio.run(main())
