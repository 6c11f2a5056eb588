"""A Litestar app verifying bearer tokens through a Registry that lives as long as the app.

The Registry is a lifespan context manager: Litestar enters and leaves it in the one task that
handles the ASGI lifespan, which is what its task group needs. A dependency turns the bearer token
into verified claims, so a handler that asks for ``claims`` is protected. The control plane
(``jwks_cache.asgi.create_app``) is mounted under ``/admin/jwks`` over the same Registry.

Run: ``python examples/litestar_app.py`` (a local identity provider and an in-process client, so it
needs no network). In a service, serve ``create_app(...)`` with any ASGI server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Request, asgi, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.types import Receive, Scope, Send

from jwks_cache import FetchError, KeyNotFoundError, ProviderConfig, Registry, TokenError
from jwks_cache.asgi import create_app as create_control_plane
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"
ADMIN_PREFIX = "/admin/jwks"


def create_app(
    provider: ProviderConfig, new_registry: Callable[[], Registry] = Registry, *, admin_token: str | None = None
) -> Litestar:
    """The app; each lifespan gets a new Registry (one can be entered only once) and control plane."""

    @asynccontextmanager
    async def open_registry(app: Litestar) -> AsyncIterator[None]:
        async with new_registry() as reg:
            await reg.register(provider)
            app.state.registry = reg
            # made here, not at import: the control plane serves an open registry and dies with it
            app.state.control_plane = create_control_plane(reg, admin_token=admin_token)
            yield

    return Litestar(
        route_handlers=[whoami, control_plane],
        lifespan=[open_registry],
        dependencies={"claims": Provide(claims)},
    )


async def claims(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The verified claims of the request's bearer token; 401 without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("a bearer token is required")
    reg: Registry = request.app.state.registry
    try:
        return await reg.verify(token.strip(), tenant=TENANT, provider=PROVIDER)
    except (TokenError, KeyNotFoundError) as exc:
        reason = exc.reason if isinstance(exc, TokenError) else "unknown_kid"
        raise NotAuthorizedException(f"invalid token ({reason})") from exc
    except FetchError as exc:  # the IdP is down and the stale window is over: not the caller's fault
        raise ServiceUnavailableException("signing keys unavailable") from exc


@get("/whoami")
async def whoami(claims: NamedDependency[dict[str, Any]]) -> str:
    return f"hello {claims['sub']}"


@asgi(ADMIN_PREFIX, is_mount=True, copy_scope=True)
async def control_plane(scope: Scope, receive: Receive, send: Send) -> None:
    """Hand everything under the prefix to the control plane, with the prefix as its ``root_path``."""
    # Litestar gives a mount the rest of the path with a trailing slash ("/status/") and keeps
    # root_path; the ASGI spec (and create_app) want path to include the mount's root_path instead.
    rest = scope["path"].rstrip("/")
    root_path = scope.get("root_path", "") + ADMIN_PREFIX
    scope["root_path"] = root_path
    scope["path"] = root_path + rest
    await scope["litestar_app"].state.control_plane(scope, receive, send)


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
        good = idp.mint({"sub": "alice", "aud": "orders", "exp": int(time.time()) + 60})
        expired = idp.mint({"sub": "bob", "aud": "orders", "exp": int(time.time()) - 60})
        # local.lifespan() runs the lifespan managers in this task, as a server's lifespan task would.
        # (ASGI has no one typing standard: Litestar's scopes are TypedDicts, httpx's mappings.)
        transport = httpx.ASGITransport(local)  # type: ignore[arg-type]
        async with local.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            for token in (good, expired, None):
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
