"""Warm restart: a Registry restoring N snapshots from a FileStore (and Redis, when a server exists).

Each measurement runs in a fresh interpreter, as a warm restart does, so the benchmark's own heap
(and its garbage-collector passes) do not count. Snapshots are written straight through the
store's public ``save`` (the body is the identity provider's real JWKS, fresh for 300 s), then a new Registry is entered with the store and every
provider registered. Timed: entering (restore on entry), the registrations, and until every
provider answers ``get_key_nowait``; the identity provider must see no request at all. A warm
restart is a start-up, so the providers are registered with ``register_many``.

A one-provider probe runs first: when a store cannot serve a restored key without an upstream
request, the case says SKIP and why instead of timing a restore that does not happen.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from jwks_cache import FileStore, KeyNotFoundError, Snapshot

from ._common import BACKENDS, CaseResult, Row, config, idp_in_thread, loopback_registry, tenant_name, verdict
from ._redis import redis_server
from .memory import jwks_body

NAME = "restore"
_REFERENCE = 10_000
_LIMIT_S = 1.0
_SAVE_CONCURRENCY = 64
_ROOT = Path(__file__).resolve().parent.parent
_SHARED_KID = ""  # set in the child process: the kid of the shared document

StoreFactory = Callable[[], Any]


def _file_store(directory: str) -> StoreFactory:
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
    make_store: StoreFactory,
    n: int,
    url: str,
    bodies: Bodies,
    *,
    rules: str | None,
    names: Callable[[int], str] = tenant_name,
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
                rules=rules,  # as the registry writes them, so restore judges them as it would its own
            )
            await store.save(snapshot)

    async with make_store() as store, anyio.create_task_group() as tg:
        for index in range(n):
            tg.start_soon(save, store, index)


async def _probe(make_store: StoreFactory, url: str, kid: str, counter: Callable[[], int]) -> str | None:
    """The rules digest the registry writes into snapshots of these registrations, when one
    restored provider answers without an upstream request; None otherwise (the case is a MISS).

    The digest covers no tenant or URL, so every seeded snapshot can carry the probe's.
    """
    async with loopback_registry(store=make_store()) as reg:  # a fetch, saved as the library saves it
        await reg.register(config(url, tenant="probe"))
        await reg.get_key("probe", "idp", kid)
    async with make_store() as store:
        written = await store.load("probe", "idp")
    before = counter()
    async with loopback_registry(store=make_store()) as reg:
        await reg.register(config(url, tenant="probe"))
        await reg.get_key("probe", "idp", kid)
    restored = counter() == before and written is not None and written.rules is not None
    return written.rules if restored and written is not None else None


def _kids(scenario: str) -> Callable[[int], str]:
    return (lambda i: f"k{i}-0") if scenario == "distinct" else (lambda _: _SHARED_KID)


def _store_from(kind: str, where: str) -> StoreFactory | None:
    return _file_store(where) if kind == "FileStore" else _redis_store(where)


async def _measure(make_store: StoreFactory, url: str, kids: Callable[[int], str], n: int) -> dict[str, Any]:
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
        # a provider not restored fetches on its own (a verdict of MISS); leaving cancels that
    return {
        "providers": n,
        "enter_seconds": entered - began,
        "register_seconds": registered - entered,
        "total_seconds": served - began,
        "not_restored_at_first_lookup": missing,
    }


def _measure_in_child(kind: str, where: str, url: str, kid: str, scenario: str, n: int, backend: str) -> dict[str, Any]:
    """A warm restart is a new process: measure in one, so this script's own heap is not in the way."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.restore", kind, where, url, kid, scenario, str(n), backend],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


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
            scenarios: dict[str, Bodies] = {"shared": lambda _: body, "distinct": jwks_body}
            where = {"FileStore": directory, "RedisStore": redis_url or ""}
            for store_name, make_store in stores.items():
                if make_store is None:
                    why = "redis-server not found" if not redis_url else "coredis not importable"
                    result.skip("-", f"{store_name}: SKIP ({why})")
                    continue
                rules = anyio.run(_probe, make_store, url, kid, counter)
                if rules is None:
                    label = f"{store_name}: a restored key was fetched upstream"
                    result.add(Row(NAME, "-", label, None, "", target="0 requests", status=verdict(False)))
                    continue
                for scenario, bodies in scenarios.items():
                    anyio.run(functools.partial(_seed, make_store, n, url, bodies, rules=rules))
                    for backend in BACKENDS if not quick else BACKENDS[:1]:  # quick: one interpreter start each
                        before = counter()
                        s = _measure_in_child(store_name, where[store_name], url, kid, scenario, n, backend)
                        s["upstream_requests"] = counter() - before
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


if __name__ == "__main__":
    _, kind_arg, where_arg, url_arg, kid_arg, scenario_arg, n_arg, backend_arg = sys.argv
    _SHARED_KID = kid_arg
    factory = _store_from(kind_arg, where_arg)
    assert factory is not None, f"{kind_arg} is not available"
    measured = anyio.run(_measure, factory, url_arg, _kids(scenario_arg), int(n_arg), backend=backend_arg)
    print(json.dumps(measured), flush=True)
