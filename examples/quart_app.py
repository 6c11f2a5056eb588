"""A Quart app verifying bearer tokens through a Registry that lives as long as the app.

``while_serving`` holds the Registry's ``async with`` across the app's life: Quart runs its startup
and shutdown halves in the one task that handles the ASGI lifespan, which is what the registry's
task group needs (``before_serving``/``after_serving`` would split it across two functions). A
decorator turns the bearer token into verified claims for the handler.

Run: ``python examples/quart_app.py`` (a local identity provider and Quart's in-process test client,
so it needs no network). In a service, serve ``create_app(...)`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import wraps
from typing import Any

from quart import Quart, current_app, g, request

from jwks_cache import FetchError, KeyNotFoundError, ProviderConfig, Registry, TokenError
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"
Handler = Callable[..., Awaitable[Any]]


def create_app(provider: ProviderConfig, new_registry: Callable[[], Registry] = Registry) -> Quart:
    """The app; each serving period gets a new Registry (one can be entered only once)."""
    app = Quart(__name__)

    @app.while_serving
    async def open_registry() -> AsyncGenerator[None, None]:
        async with new_registry() as reg:
            await reg.register(provider)
            app.extensions["jwks_cache"] = reg
            yield

    @app.get("/whoami")
    @bearer_auth
    async def whoami() -> str:
        return f"hello {g.claims['sub']}"

    return app


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
        provider = ProviderConfig(
            tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, audience="orders"
        )
        app = create_app(provider, lambda: Registry(require_https=False, allow_private_networks=True))
        good = idp.mint({"sub": "alice", "aud": "orders", "exp": int(time.time()) + 60})
        forged = good[:-6] + "AAAAAA"
        async with app.test_app() as test_app:  # runs the lifespan, as a server would
            client = test_app.test_client()
            for token in (good, forged, None):
                headers = {"authorization": f"Bearer {token}"} if token else {}
                response = await client.get("/whoami", headers=headers)
                body = (
                    await response.get_data(as_text=True)
                    if response.status_code == 200
                    else (await response.get_json())["detail"]
                )
                print(response.status_code, body)


if __name__ == "__main__":
    asyncio.run(main())
