"""A plain asyncio service verifying bearer tokens through a Registry.

Run: ``python examples/asyncio_service.py`` (uses a local identity provider, so it needs no network).
"""

from __future__ import annotations

import asyncio
import time

from jwks_cache import ProviderConfig, Registry, TokenError
from jwks_cache.testing import LocalIdentityProvider


async def handle(reg: Registry, token: str) -> str:
    """What a request handler does: verify, then use the claims."""
    try:
        claims = await reg.verify(token, tenant="acme", provider="local")
    except TokenError as exc:
        return f"401 ({exc.reason})"
    return f"200 hello {claims['sub']}"


async def main() -> None:
    async with LocalIdentityProvider() as idp, Registry(require_https=False, allow_private_networks=True) as reg:
        await reg.register(
            ProviderConfig(
                tenant="acme", provider="local", jwks_url=idp.jwks_url, require_https=False, audience="orders"
            )
        )
        good = idp.mint({"sub": "alice", "aud": "orders", "exp": int(time.time()) + 60})
        forged = good[:-6] + "AAAAAA"
        for line in await asyncio.gather(handle(reg, good), handle(reg, forged), handle(reg, good)):
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
