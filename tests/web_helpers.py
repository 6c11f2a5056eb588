"""For the web-framework tests: identity providers in a thread of their own, and tokens.

The frameworks' test clients run the app in a blocking portal (an event loop in another thread,
asyncio or trio) and block the calling thread on each request, so the identity providers serve
from a third loop: a registry fetching from them never waits on a blocked loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from jwks_cache.testing import LocalIdentityProvider

AUDIENCE = "orders"


@dataclass
class IdpThread:
    """Identity providers served from a background event loop, and the portal into that loop."""

    portal: BlockingPortal
    idps: list[LocalIdentityProvider]

    def release(self, idp: LocalIdentityProvider) -> None:
        """Answer the requests ``idp`` holds (after ``stall(math.inf)``), from the providers' own loop."""
        self.portal.call(idp.recover)


@contextmanager
def threaded_idps(count: int = 2) -> Iterator[IdpThread]:
    """``count`` LocalIdentityProviders served from one background event loop."""
    with start_blocking_portal() as portal, ExitStack() as stack:
        idps = [stack.enter_context(portal.wrap_async_context_manager(LocalIdentityProvider())) for _ in range(count)]
        yield IdpThread(portal, idps)


class Arrivals:
    """An ASGI app around another, counting the HTTP requests that reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


def held_request(
    request: Callable[[], Any], arrived: Callable[[], bool], release: Callable[[], None]
) -> tuple[bool, Any]:
    """Send ``request`` from another thread; once ``arrived()`` (polled, 5 s at most), ``release()``.

    Returns whether the response came before the release, and the response: a request that reached
    the app and is answered only after the identity provider is released waited on it.
    """
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(request)
        for _ in range(5000):
            if arrived() or sent.done():
                break
            time.sleep(0.001)
        answered_before_release = sent.done()
        release()
        return answered_before_release, sent.result(timeout=30)


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
