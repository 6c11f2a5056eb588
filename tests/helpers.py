"""Shared test builders: a registration for a LocalIdentityProvider and a loopback-enabled Registry."""

from __future__ import annotations

from typing import Any

import anyio

from jwks_cache import FetchError, ProviderConfig, Registry, RetryPolicy
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

TENANT = "acme"
PROVIDER = "idp"

#: Fast real-time retries for tests that must run on the real clock (timeouts of stalled servers).
QUICK_RETRY = RetryPolicy(max_retries=2, attempt_timeout=0.2, initial_backoff=0.01, max_backoff=0.02, deadline=1.0)


def config_for(idp: LocalIdentityProvider, **changes: Any) -> ProviderConfig:
    fields: dict[str, Any] = {
        "tenant": TENANT,
        "provider": PROVIDER,
        "jwks_url": idp.jwks_url,
        "require_https": idp.base_url.startswith("https:"),
    }
    fields.update(changes)
    return ProviderConfig(**fields)


def loopback_registry(clock: VirtualClock | None = None, **kwargs: Any) -> Registry:
    """A Registry allowed to reach 127.0.0.1 over plain HTTP, as every test IdP lives there."""
    kwargs.setdefault("require_https", False)
    return Registry(allow_private_networks=True, clock=clock, **kwargs)


async def eventually(predicate: Any, *, clock: VirtualClock | None = None, spins: int = 10_000) -> None:
    """Let tasks run (never real sleeps) until ``predicate()`` holds; bounded in count."""
    for _ in range(spins):
        if predicate():
            return
        if clock is not None:
            await clock.settle()
        else:
            await anyio.lowlevel.checkpoint()
    raise AssertionError("condition not reached")


async def failed_lookups(reg: Registry, clock: VirtualClock, kid: str, *, steps: int) -> list[FetchError]:
    """One ``get_key`` of TENANT/PROVIDER in a task while virtual time moves through its retry
    backoff (``steps`` quarter seconds); the FetchError it ended with, if any."""
    errors: list[FetchError] = []

    async def lookup() -> None:
        try:
            await reg.get_key(TENANT, PROVIDER, kid)
        except FetchError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lookup)
        for _ in range(steps):
            await clock.advance(0.25)
    return errors
