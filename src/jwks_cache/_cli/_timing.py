"""Tight-loop timing shared by ``benchmarks/`` and ``jwks-cache demo``, so both print the same figure.

A contender is timed in batches with ``perf_counter_ns`` and the best batch wins, because noise on a
shared machine only ever adds time; contenders are interleaved batch by batch so a frequency or
neighbour change hits all of them alike. Benchmark timing, not cache logic: ``perf_counter`` is the
right clock here and stays outside the Clock seam.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["DictFloor", "best_per_call", "time_async", "time_sync"]


def time_sync(fn: Callable[[], object], calls: int) -> int:
    """Nanoseconds for ``calls`` calls of ``fn`` in one tight loop."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return time.perf_counter_ns() - start


async def time_async(fn: Callable[[], Awaitable[object]], calls: int) -> int:
    """Nanoseconds for ``calls`` awaited calls of ``fn`` in one tight loop (one task)."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        await fn()
    return time.perf_counter_ns() - start


async def best_per_call(
    contenders: Mapping[str, Callable[[int], Awaitable[int]]], calls: int, repeats: int
) -> dict[str, float]:
    """Min over ``repeats`` interleaved batches of each contender's ns per call.

    The collector is paused while timing: a collection in one contender's batch is noise, not cost.
    """
    best = dict.fromkeys(contenders, float("inf"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, batch in contenders.items():
                best[name] = min(best[name], await batch(calls) / calls)
    finally:
        gc.enable()
    return best


class DictFloor:
    """The floor a warm lookup is measured against: methods that only read a dict, the least any
    key cache costs (awaited: what every awaited API call pays at least)."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self._keys = keys

    async def get_key(self, tenant: str, provider: str, kid: str) -> Any:
        return self._keys[kid]

    def get_key_sync(self, tenant: str, provider: str, kid: str) -> Any:
        return self._keys[kid]
