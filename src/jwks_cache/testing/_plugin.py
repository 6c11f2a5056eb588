"""pytest plugin (entry point ``jwks_cache``): fixtures for users' own tests.

Async fixtures need an async test runner; anyio's built-in pytest plugin provides one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._clock import VirtualClock
from ._idp import LocalIdentityProvider


@pytest.fixture
async def local_idp() -> AsyncIterator[LocalIdentityProvider]:
    """A LocalIdentityProvider over plain HTTP on 127.0.0.1 (register with require_https=False)."""
    async with LocalIdentityProvider() as idp:
        yield idp


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A VirtualClock to pass as ``Registry(clock=...)``; advance it with ``await clock.advance(s)``."""
    return VirtualClock()
