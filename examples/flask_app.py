"""A Flask app verifying bearer tokens through a SyncRegistry.

Flask is synchronous, so the Registry runs on an event loop of its own thread
(``jwks_cache.sync.SyncRegistry``); every request thread calls it as a plain function. The app
factory starts it (``start()``: a factory has no ``with``) and keeps it on ``app.extensions``;
nothing closes it explicitly, as Flask has no shutdown hook: the facade closes itself at
interpreter exit, flushing its store. ``require_token`` answers per RFC 6750: 401 with
``WWW-Authenticate: Bearer`` without a token, 401 ``invalid_token`` for a bad one, 403
``insufficient_scope`` when a scope is missing, 503 while the keys are unavailable.

Run: ``python examples/flask_app.py`` (a local identity provider and Flask's test client, so it
needs no network). In a service, serve ``create_app(...)`` with any WSGI server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from anyio.from_thread import start_blocking_portal
from flask import Flask, Response, current_app, g, jsonify, request

from jwks_cache import ProviderConfig
from jwks_cache.bearer import Challenge
from jwks_cache.sync import SyncRegistry, TokenGuard
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"


def _answer(challenge: Challenge) -> Response:
    response = jsonify(challenge.body)
    response.status_code = challenge.status
    response.headers.update(challenge.headers)
    return response


def _keep(claims: dict[str, Any], *_args: Any, **_kwargs: Any) -> None:
    g.jwt_claims = claims


#: One guard for the app: the registry is looked up per request, so views can be decorated at import.
require_token = TokenGuard(
    lambda: current_app.extensions["jwks_cache"],
    authorization=lambda *_args, **_kwargs: request.headers.get("Authorization"),
    respond=_answer,
    store=_keep,
).require_token


def create_app(providers: Iterable[ProviderConfig], *, warm_timeout: float = 5.0, **registry_kwargs: Any) -> Flask:
    """The app, with a started SyncRegistry holding ``providers`` (warmed for up to ``warm_timeout``)."""
    app = Flask(__name__)
    registry = SyncRegistry(**registry_kwargs).start()
    registry.register_many(providers)
    for cold in registry.warm(max_wait=warm_timeout):  # serve anyway: the first request fetches
        app.logger.warning("no keys yet for %s/%s: %s", cold.tenant, cold.provider, cold.last_error)
    app.extensions["jwks_cache"] = registry

    @app.get("/whoami")
    @require_token(tenant=TENANT, provider=PROVIDER)
    def whoami() -> dict[str, Any]:
        return {"sub": g.jwt_claims["sub"]}

    @app.get("/orders")
    @require_token(tenant=TENANT, provider=PROVIDER, scopes=["orders:read"])
    def orders() -> dict[str, Any]:
        return {"orders": [], "for": g.jwt_claims["sub"]}

    @app.get("/tenants/<tenant>/whoami")
    @require_token(tenant=lambda tenant: tenant, provider=PROVIDER)  # the tenant of the path
    def tenant_whoami(tenant: str) -> dict[str, Any]:
        return {"tenant": tenant, "sub": g.jwt_claims["sub"]}

    return app


def main() -> None:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(LocalIdentityProvider()) as idp,
    ):
        provider = ProviderConfig(
            tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, audience="orders"
        )
        app = create_app([provider], require_https=False, allow_private_networks=True)
        now = int(time.time())
        good = idp.mint({"sub": "alice", "aud": "orders", "scope": "orders:read", "exp": now + 60})
        reader = idp.mint({"sub": "bob", "aud": "orders", "exp": now + 60})
        expired = idp.mint({"sub": "alice", "aud": "orders", "exp": now - 60})
        client = app.test_client()
        for path, token in (("/orders", good), ("/orders", reader), ("/whoami", expired), ("/whoami", None)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.get(path, headers=headers)
            print(response.status_code, path, response.headers.get("WWW-Authenticate", response.get_json()))
        app.extensions["jwks_cache"].close()  # optional: at exit it would close itself


if __name__ == "__main__":
    main()
