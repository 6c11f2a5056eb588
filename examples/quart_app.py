"""A Quart app verifying bearer tokens through a Registry that lives as long as the app.

``while_serving`` holds the Registry's ``async with`` across the app's life: Quart runs its startup
and shutdown halves in the one task that handles the ASGI lifespan, which is what the registry's
task group needs (``before_serving``/``after_serving`` would split it across two functions). A
decorator turns the bearer token into verified claims for the handler. Quart cannot mount an ASGI
app, so ``with_control_plane`` puts a small dispatcher in front of it that sends ``/admin/jwks``
to the control plane (``jwks_cache.asgi.create_app``) over the same Registry.

Run: ``python examples/quart_app.py`` (a local identity provider and an in-process client, so it
needs no network). In a service, serve ``with_control_plane(create_app(...))`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import wraps
from typing import Any

import httpx
from quart import Quart, current_app, g, request

from jwks_cache import FetchError, KeyNotFoundError, ProviderConfig, Registry, TokenError
from jwks_cache.asgi import create_app as create_control_plane
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"
ADMIN_PREFIX = "/admin/jwks"
Handler = Callable[..., Awaitable[Any]]
#: ASGI has no one typing standard (Quart's scopes are hypercorn TypedDicts, the control plane takes any mapping).
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def create_app(
    provider: ProviderConfig, new_registry: Callable[[], Registry] = Registry, *, admin_token: str | None = None
) -> Quart:
    """The app; each serving period gets a new Registry (one can be entered only once) and control plane."""
    app = Quart(__name__)

    @app.while_serving
    async def open_registry() -> AsyncGenerator[None, None]:
        async with new_registry() as reg:
            await reg.register(provider)
            app.extensions["jwks_cache"] = reg
            # made here, not at import: the control plane serves an open registry and dies with it
            app.extensions["jwks_cache.control_plane"] = create_control_plane(reg, admin_token=admin_token)
            yield

    @app.get("/whoami")
    @bearer_auth
    async def whoami() -> str:
        return f"hello {g.claims['sub']}"

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


def bearer_auth(handler: Handler) -> Handler:
    """Verify the request's bearer token before ``handler`` runs; its claims are ``g.claims``."""

    @wraps(handler)
    async def checked(*args: Any, **kwargs: Any) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return {"detail": "a bearer token is required"}, 401, {"www-authenticate": "Bearer"}
        reg: Registry = current_app.extensions["jwks_cache"]
        try:
            g.claims = await reg.verify(token.strip(), tenant=TENANT, provider=PROVIDER)
        except (TokenError, KeyNotFoundError) as exc:
            reason = exc.reason if isinstance(exc, TokenError) else "unknown_kid"
            return {"detail": f"invalid token ({reason})"}, 401, {"www-authenticate": 'Bearer error="invalid_token"'}
        except FetchError:  # the IdP is down and the stale window is over: not the caller's fault
            return {"detail": "signing keys unavailable"}, 503
        return await handler(*args, **kwargs)

    return checked


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
                body = response.text if response.is_success else response.json()["detail"]
                print(response.status_code, body)
            for path in ("/status", f"/tenants/{TENANT}/providers/{PROVIDER}/jwks"):
                # the control plane's reads need its token too (protect_reads, the default)
                response = await http.get(ADMIN_PREFIX + path, headers={"authorization": f"Bearer {admin_token}"})
                print(f"GET {ADMIN_PREFIX}{path}:", response.status_code)


if __name__ == "__main__":
    asyncio.run(main())
