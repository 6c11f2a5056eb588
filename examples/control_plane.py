"""The control plane, ``jwks_cache.asgi.create_app``, over a running Registry.

The app needs an open registry and starts no tasks of its own, so it is made inside the registry's
``async with`` and served for exactly that block. Here an in-process client (httpx's ASGITransport)
plays the operator; ``jwks-cache serve --config providers.toml`` runs the same app under hypercorn,
and any ASGI framework can mount it (it honours ``root_path``).

Run: ``python examples/control_plane.py`` (a local identity provider, on Trio; it needs no network).
"""

from __future__ import annotations

import secrets

import anyio
import httpx

from jwks_cache import Registry
from jwks_cache.asgi import create_app
from jwks_cache.testing import LocalIdentityProvider

REGISTRATION = "/tenants/acme/providers/local"


async def main() -> None:
    admin_token = secrets.token_urlsafe(32)  # in production: from a secret store, never a literal
    admin = {"authorization": f"Bearer {admin_token}"}
    async with LocalIdentityProvider() as idp, Registry(require_https=False, allow_private_networks=True) as reg:
        transport = httpx.ASGITransport(create_app(reg, admin_token=admin_token))
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane") as http:
            body = {"jwks_url": idp.jwks_url}  # require_https: the registry's (False here), as in a serve file
            anonymous = await http.put(REGISTRATION, json=body)
            print("PUT without token:", anonymous.status_code)
            registered = await http.put(REGISTRATION, json=body, headers=admin)
            print("PUT with token:", registered.status_code)
            hidden = await http.get(f"{REGISTRATION}/status")  # reads are protected by default
            print("GET status without token:", hidden.status_code)
            jwks = await http.get(f"{REGISTRATION}/jwks", headers=admin)  # the first fetch happens here
            print("GET jwks:", jwks.status_code, "kids", ", ".join(key["kid"] for key in jwks.json()["keys"]))
            health = await http.get("/healthz")  # open: says pass or fail, and nothing else
            print("GET healthz:", health.status_code, health.json()["status"])
            status = (await http.get(f"{REGISTRATION}/status", headers=admin)).json()
            print("GET status:", status["state"], "refreshes", status["refreshes"])


if __name__ == "__main__":
    anyio.run(main, backend="trio")
