"""The clock seam's deadline scopes: only their own deadline ends a block early or makes a TimeoutError."""

from __future__ import annotations

import anyio
import pytest

from jwks_cache._clock import Clock, SystemClock, fail_at, move_on_at
from jwks_cache.testing import VirtualClock


def _clocks() -> list[Clock]:
    return [SystemClock(), VirtualClock()]


class _BodyTimeout(TimeoutError):
    """A TimeoutError of the block's own (an upstream read that timed out)."""


@pytest.mark.parametrize("clock", _clocks(), ids=["system", "virtual"])
async def test_move_on_at_lets_a_timeout_error_of_the_block_through(clock: Clock) -> None:
    with anyio.fail_after(5), pytest.raises(_BodyTimeout), move_on_at(clock, clock.monotonic() + 3600):
        raise _BodyTimeout("the block's own")


@pytest.mark.parametrize("clock", _clocks(), ids=["system", "virtual"])
async def test_fail_at_lets_a_timeout_error_of_the_block_through_unchanged(clock: Clock) -> None:
    raised = _BodyTimeout("the block's own")
    with anyio.fail_after(5), pytest.raises(_BodyTimeout) as caught, fail_at(clock, clock.monotonic() + 3600):
        raise raised
    assert caught.value is raised


async def test_move_on_at_still_leaves_quietly_at_its_deadline() -> None:
    clock = VirtualClock()
    left = False
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def body() -> None:
                nonlocal left
                with move_on_at(clock, clock.monotonic() + 10) as scope:
                    await anyio.sleep_forever()
                left = scope.cancelled_caught

            tg.start_soon(body)
            await clock.advance(10)
    assert left


async def test_fail_at_still_raises_at_its_deadline() -> None:
    clock = VirtualClock()
    outcome: list[BaseException] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def body() -> None:
                try:
                    with fail_at(clock, clock.monotonic() + 10):
                        await anyio.sleep_forever()
                except TimeoutError as exc:
                    outcome.append(exc)

            tg.start_soon(body)
            await clock.advance(10)
    assert len(outcome) == 1 and not isinstance(outcome[0], _BodyTimeout)
