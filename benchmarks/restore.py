"""Warm restart: a Registry restoring N snapshots from a FileStore (and Redis, when a server exists).

Snapshots are written straight through the store's public ``save`` (the body is the identity
provider's real JWKS, fresh for 300 s), then a new Registry is entered with the store and every
provider registered. Timed: entering (restore on entry), the registrations, and until every
provider answers ``get_key_nowait``; the identity provider must see no request at all. A warm
restart is a start-up, so the providers are registered with ``register_many``.

Stores are being wired into the Registry; until a one-provider probe shows a restored key served
without an upstream request, the case prints SKIP instead of measuring.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from jwks_cache import KeyNotFoundError, Snapshot

from ._common import BACKENDS, CaseResult, Row, config, idp_in_thread, loopback_registry, tenant_name, verdict
from ._redis import redis_server
from .memory import jwks_body

NAME = "restore"
_REFERENCE = 10_000
_LIMIT_S = 1.0
_SAVE_CONCURRENCY = 64

StoreFactory = Callable[[], Any]


def _file_store(directory: str) -> StoreFactory | None:
    try:
        from jwks_cache import FileStore
    except ImportError:
        try:
            from jwks_cache._stores import FileStore
        except ImportError:
            return None
    return lambda: FileStore(directory)


def _redis_store(url: str) -> StoreFactory | None:
    try:
        from jwks_cache.redis import RedisStore

        RedisStore(url)  # raises ConfigError without coredis
    except Exception:
        return None
    return lambda: RedisStore(url, namespace="bench-restore")


Bodies = Callable[[int], bytes]


async def _seed(
    make_store: StoreFactory, n: int, url: str, bodies: Bodies, *, names: Callable[[int], str] = tenant_name
) -> None:
    now = time.time()
    limiter = anyio.CapacityLimiter(_SAVE_CONCURRENCY)

    async def save(store: Any, index: int) -> None:
        async with limiter:
            snapshot = Snapshot(
                tenant=names(index),
                provider="idp",
                jwks_url=url,
                body=bodies(index),
                fetched_at=now,
                expires_at=now + 300,
            )
            await store.save(snapshot)

    async with make_store() as store, anyio.create_task_group() as tg:
        for index in range(n):
            tg.start_soon(save, store, index)


async def _probe(make_store: StoreFactory, url: str, kid: str, body: bytes, counter: Callable[[], int]) -> str | None:
    """None when restore works end to end; otherwise why the case must be skipped."""
    await _seed(make_store, 1, url, lambda _: body, names=lambda _: "probe")
    before = counter()
    try:
        async with loopback_registry(store=make_store()) as reg:
            await reg.register(config(url, tenant="probe"))
            await reg.get_key("probe", "idp", kid)
    except (AttributeError, TypeError, NotImplementedError) as exc:
        return f"SKIP (not available yet: {type(exc).__name__}: {exc})"
    if counter() != before:
        return "SKIP (not available yet: Registry(store=...) does not restore; the key was fetched)"
    return None


async def _measure(
    make_store: StoreFactory, url: str, kids: Callable[[int], str], n: int, counter: Callable[[], int]
) -> dict[str, Any]:
    before = counter()
    began = time.perf_counter()
    async with loopback_registry(store=make_store()) as reg:
        entered = time.perf_counter()
        await reg.register_many(config(url, tenant=tenant_name(i)) for i in range(n))
        registered = time.perf_counter()
        missing = 0
        for i in range(n):
            try:
                reg.get_key_nowait(tenant_name(i), "idp", kids(i))
            except KeyNotFoundError:
                missing += 1
        served = time.perf_counter()
        requests = counter() - before
        # a provider not restored fetches on its own (a verdict of MISS); leaving cancels that
    return {
        "providers": n,
        "enter_seconds": entered - began,
        "register_seconds": registered - entered,
        "total_seconds": served - began,
        "not_restored_at_first_lookup": missing,
        "upstream_requests": requests,
    }


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    n = 2_000 if quick else _REFERENCE
    scale = _REFERENCE / n
    with tempfile.TemporaryDirectory(prefix="jwks-bench-") as directory, redis_server() as redis_url:
        stores: dict[str, StoreFactory | None] = {"FileStore": _file_store(directory)}
        stores["RedisStore"] = _redis_store(redis_url) if redis_url else None
        with idp_in_thread(keys=5) as (idp, _portal):
            body = httpx.get(idp.jwks_url).content
            url, kid = idp.jwks_url, idp.kids[0]

            def counter() -> int:
                return idp.request_count

            # shared: every tenant stored the same document (parsed once); distinct: each its own five keys
            scenarios: dict[str, tuple[Bodies, Callable[[int], str]]] = {
                "shared": (lambda _: body, lambda _: kid),
                "distinct": (jwks_body, lambda i: f"k{i}-0"),
            }
            for store_name, make_store in stores.items():
                if make_store is None:
                    why = "redis-server not found" if store_name == "RedisStore" and not redis_url else "not importable"
                    result.skip("-", f"{store_name}: SKIP ({why})")
                    continue
                reason = anyio.run(_probe, make_store, url, kid, body, counter)
                if reason is not None:
                    result.skip("-", f"{store_name}: {reason}")
                    continue
                for scenario, (bodies, kids) in scenarios.items():
                    anyio.run(_seed, make_store, n, url, bodies)
                    for backend in BACKENDS:
                        s = anyio.run(_measure, make_store, url, kids, n, counter, backend=backend)
                        result.raw.setdefault(store_name, {}).setdefault(scenario, {})[backend] = s
                        _rows(result, backend, f"{store_name}, {scenario} keys,", s, scale)
    return result


def _rows(result: CaseResult, backend: str, store: str, s: dict[str, Any], scale: float) -> None:
    suffix = f" (x{scale:g} of {s['providers']})" if scale != 1 else ""
    result.add(Row(NAME, backend, f"{store} enter (restore on entry)", s["enter_seconds"] * scale, "s"))
    result.add(Row(NAME, backend, f"{store} register all", s["register_seconds"] * scale, "s"))
    total = s["total_seconds"] * scale
    ok = total < _LIMIT_S and s["not_restored_at_first_lookup"] == 0
    target = f"< {_LIMIT_S:g} s"
    result.add(
        Row(NAME, backend, f"{store} restore {_REFERENCE}{suffix}", total, "s", target=target, status=verdict(ok))
    )
    requests = s["upstream_requests"]
    result.add(
        Row(
            NAME,
            backend,
            f"{store} upstream requests",
            requests,
            "requests",
            target="== 0",
            status=verdict(requests == 0),
        )
    )
