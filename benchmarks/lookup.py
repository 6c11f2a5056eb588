"""Warm key lookups: ``await get_key`` and ``get_key_nowait`` against a dict floor and PyJWKClient.

The floor is the least any async key cache can do per call: an awaited coroutine doing one dict
lookup. PyJWKClient runs in its default configuration (JWK set cached, no per-kid LRU) because
that is what services deploy; its ``cache_keys=True`` LRU variant is reported as information.
"""

from __future__ import annotations

import anyio
import jwt

from jwks_cache._cli._timing import DictFloor

from ._common import (
    BACKENDS,
    PROVIDER,
    TENANT,
    CaseResult,
    Row,
    best_per_call,
    config,
    idp_in_thread,
    loopback_registry,
    time_async,
    time_sync,
    verdict,
)

NAME = "warm lookup"
_FLOOR_FACTOR = 2.5
_PEER_FACTOR = 10.0


async def _measure(url: str, calls: int, repeats: int) -> dict[str, float]:
    peer = jwt.PyJWKClient(url)
    peer_lru = jwt.PyJWKClient(url, cache_keys=True)
    async with loopback_registry() as reg:
        await reg.register(config(url))
        kid = (await reg.resolve(TENANT, PROVIDER)).keys[0].kid
        assert kid is not None  # the IdP names its keys
        key = await reg.get_key(TENANT, PROVIDER, kid)
        floor = DictFloor({kid: key})
        await anyio.to_thread.run_sync(peer.get_signing_key, kid)  # warm: its one fetch, off the loop
        await anyio.to_thread.run_sync(peer_lru.get_signing_key, kid)
        t, p = TENANT, PROVIDER

        async def floor_batch(n: int) -> int:
            return await time_async(lambda: floor.get_key(t, p, kid), n)

        async def sync_floor_batch(n: int) -> int:
            return time_sync(lambda: floor.get_key_sync(t, p, kid), n)

        async def get_key_batch(n: int) -> int:
            return await time_async(lambda: reg.get_key(t, p, kid), n)

        async def nowait_batch(n: int) -> int:
            return time_sync(lambda: reg.get_key_nowait(t, p, kid), n)

        async def peer_batch(n: int) -> int:
            return time_sync(lambda: peer.get_signing_key(kid), max(1, n // 20)) * 20

        async def peer_lru_batch(n: int) -> int:
            return time_sync(lambda: peer_lru.get_signing_key(kid), n)

        return await best_per_call(
            {
                "floor_awaited_dict": floor_batch,
                "floor_sync_dict": sync_floor_batch,
                "get_key": get_key_batch,
                "get_key_nowait": nowait_batch,
                "pyjwkclient": peer_batch,
                "pyjwkclient_cache_keys": peer_lru_batch,
            },
            calls,
            repeats,
        )


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    calls, repeats = (2_000, 150) if quick else (2_000, 1_000)
    with idp_in_thread(keys=2) as (idp, _portal):
        for backend in BACKENDS:
            ns = anyio.run(_measure, idp.jwks_url, calls, repeats, backend=backend)
            result.raw[backend] = {"ns_per_call": ns, "calls_per_batch": calls, "batches": repeats}
            floor, peer = ns["floor_awaited_dict"], ns["pyjwkclient"]
            for label in ("floor_awaited_dict", "floor_sync_dict", "pyjwkclient", "pyjwkclient_cache_keys"):
                result.add(Row(NAME, backend, label, ns[label], "ns/call"))
            # the ceiling of any awaited API against this peer: the floor itself
            result.add(Row(NAME, backend, "floor vs PyJWKClient", floor, "ns/call", "PyJWKClient", peer / floor))
            for label in ("get_key", "get_key_nowait"):
                value = ns[label]
                result.add(
                    Row(
                        NAME,
                        backend,
                        f"{label} vs floor",
                        value,
                        "ns/call",
                        "awaited dict",
                        value / floor,
                        f"<= {_FLOOR_FACTOR}x",
                        verdict(value <= _FLOOR_FACTOR * floor),
                    )
                )
                speedup = peer / value
                result.add(
                    Row(
                        NAME,
                        backend,
                        f"{label} vs PyJWKClient",
                        value,
                        "ns/call",
                        "PyJWKClient",
                        speedup,
                        f">= {_PEER_FACTOR:g}x faster",
                        verdict(speedup >= _PEER_FACTOR),
                    )
                )
    result.notes.append(
        "ratio column: 'vs floor' is ours/floor (lower is better); 'vs PyJWKClient' is peer/ours (speed-up)."
    )
    return result
