"""For the web-framework tests: identity providers in a thread of their own, and tokens.

The frameworks' test clients run the app in a blocking portal (an event loop in another thread,
asyncio or trio) and block the calling thread on each request, so the identity providers serve
from a third loop: a registry fetching from them never waits on a blocked loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from anyio.from_thread import start_blocking_portal

from jwks_cache.testing import LocalIdentityProvider

AUDIENCE = "orders"


@contextmanager
def threaded_idps(count: int = 2) -> Iterator[list[LocalIdentityProvider]]:
    """``count`` LocalIdentityProviders served from one background event loop."""
    with start_blocking_portal() as portal, ExitStack() as stack:
        yield [stack.enter_context(portal.wrap_async_context_manager(LocalIdentityProvider())) for _ in range(count)]


def token(idp: LocalIdentityProvider, **claims: Any) -> str:
    """A token for AUDIENCE valid for a minute; ``claims`` add to or replace the defaults."""
    return idp.mint({"sub": "alice", "aud": AUDIENCE, "exp": int(time.time()) + 60, **claims})


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def forged(idp: LocalIdentityProvider) -> str:
    """A token whose signature is another token's: ``bad_signature`` under a known kid."""
    head, body, _ = token(idp).split(".")
    return ".".join((head, body, token(idp, sub="mallory").split(".")[2]))


@contextmanager
def recorded_warnings() -> Iterator[list[logging.LogRecord]]:
    """What the integrations log at start-up. A handler of its own: Litestar's logging set-up
    replaces the root handlers, pytest's capture among them."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    web = logging.getLogger("jwks_cache.web")
    web.addHandler(handler)
    try:
        yield records
    finally:
        web.removeHandler(handler)
