"""Registering many providers, and what a warm registry costs while it waits for its next refreshes.

``register`` does no I/O, but it schedules the provider's first fetch. Three variants:

- *library only* (verdict): the registry's ``http_client`` has a transport that parks every request
  until all registrations are done, then answers from memory. This times what ``register`` and the
  start of the first fetches cost the library, without sockets or a server.
- *register_many with start-up fetches* (verdict): a real LocalIdentityProvider (own thread) answers
  at once, and the batch is registered with ``register_many``, the API for a service's start-up.
- *register one by one with start-up fetches* (information): each ``register`` call is a scheduling
  point, so the loop shares the event loop with the first fetches of the providers registered so
  far, and finishes about when those fetches do: it measures fetch throughput, not registration.
  Sizes below 10,000 are extrapolated with the exponent fitted on the two largest.

Idle cost: with every provider warm over real HTTP, the process's CPU time is read over a stretch of
real time in which no refresh is due (TTL 300 s).
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import httpx

from ._common import (
    BACKENDS,
    CaseResult,
    Row,
    config,
    cpu_seconds,
    idp_in_thread,
    loopback_registry,
    tenant_name,
    verdict,
)

NAME = "register + idle"
_REFERENCE = 10_000
_REGISTER_LIMIT_S = 2.0
_IDLE_LIMIT_PERCENT = 1.0
_DIRECT_BUDGET_S = 45.0  # measure 10,000 with start-up fetches only if the fit predicts at most this


async def _library_only(body: bytes, url: str, kid: str, n: int) -> dict[str, Any]:
    release = anyio.Event()

    async def parked(request: httpx.Request) -> httpx.Response:
        await release.wait()
        headers = {"content-type": "application/json", "cache-control": "max-age=300"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    client = httpx.AsyncClient(transport=httpx.MockTransport(parked))
    async with client, loopback_registry(http_client=client) as reg:
        configs = [config(url, tenant=tenant_name(i)) for i in range(n)]
        began = time.perf_counter()
        for each in configs:
            await reg.register(each)
        registered = time.perf_counter() - began
        release.set()
        began = time.perf_counter()
        with anyio.fail_after(900):
            for i in range(n):
                await reg.get_key(tenant_name(i), "idp", kid)
        return {"providers": n, "register_seconds": registered, "warm_up_seconds": time.perf_counter() - began}


async def _with_fetches(
    url: str, kid: str, n: int, idle_seconds: float, batch: bool = False, warm: bool = True
) -> dict[str, Any]:
    async with loopback_registry() as reg:
        configs = [config(url, tenant=tenant_name(i)) for i in range(n)]
        began = time.perf_counter()
        if batch:
            await reg.register_many(configs)
        else:
            for each in configs:
                await reg.register(each)
        registered = time.perf_counter() - began
        figures: dict[str, Any] = {"providers": n, "register_seconds": registered}
        if not warm:
            return figures  # leaving the block cancels the first fetches
        began = time.perf_counter()
        with anyio.fail_after(900):
            for i in range(n):
                await reg.get_key(tenant_name(i), "idp", kid)
        figures["warm_up_seconds"] = time.perf_counter() - began
        if idle_seconds:
            await anyio.sleep(0.5)  # let fetch tasks and connections wind down before the idle window
            wall, cpu = time.perf_counter(), cpu_seconds()
            await anyio.sleep(idle_seconds)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            figures |= {
                "idle_wall_seconds": wall,
                "idle_cpu_seconds": cpu,
                "idle_cpu_percent": 100 * cpu / wall,
                "refreshes": sum(s.refreshes for s in reg.statuses()),
            }
    return figures


def _fit(small: dict[str, Any], large: dict[str, Any]) -> tuple[float, float]:
    """(seconds for 10,000, growth exponent k >= 1) from two sizes, with t = a * n ** k."""
    n1, t1 = small["providers"], small["register_seconds"]
    n2, t2 = large["providers"], large["register_seconds"]
    k = max(1.0, math.log(t2 / t1) / math.log(n2 / n1)) if t1 > 0 and t2 > 0 else 1.0
    return t2 * (_REFERENCE / n2) ** k, k


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    library_n = 500 if quick else _REFERENCE
    sizes, idle = ([150, 300], 1.0) if quick else ([1_000, 2_000], 20.0)
    with idp_in_thread(keys=1) as (idp, _portal):
        body = httpx.get(idp.jwks_url).content
        url, kid = idp.jwks_url, idp.kids[0]
        for backend in BACKENDS:
            raw: dict[str, Any] = {}
            lib = anyio.run(_library_only, body, url, kid, library_n, backend=backend)
            raw["library_only"] = lib
            seconds = lib["register_seconds"] * _REFERENCE / library_n
            label = f"register {_REFERENCE}, library only" + (f" (x{_REFERENCE // library_n})" if quick else "")
            _verdict_row(result, backend, label, seconds)
            many = anyio.run(_with_fetches, url, kid, _REFERENCE, 0.0, True, not quick, backend=backend)
            raw["register_many_with_fetches"] = many
            _verdict_row(result, backend, f"register_many {_REFERENCE} with start-up fetches", many["register_seconds"])
            if "warm_up_seconds" in many:
                result.add(Row(NAME, backend, f"... then all {_REFERENCE} warm", many["warm_up_seconds"], "s"))
            runs = [anyio.run(_with_fetches, url, kid, n, 0.0, backend=backend) for n in sizes[:-1]]
            runs.append(anyio.run(_with_fetches, url, kid, sizes[-1], idle, backend=backend))
            predicted, k = _fit(runs[-2], runs[-1])
            raw |= {"with_fetches": runs, "fitted_exponent": k, "extrapolated_seconds": predicted}
            for r in runs:
                label = f"register one by one, {r['providers']} with start-up fetches"
                result.add(Row(NAME, backend, label, r["register_seconds"], "s"))
            if not quick and predicted <= _DIRECT_BUDGET_S:
                direct = anyio.run(_with_fetches, url, kid, _REFERENCE, 0.0, backend=backend)
                raw["with_fetches_direct"] = direct
                label = f"register one by one, {_REFERENCE} with start-up fetches"
                result.add(Row(NAME, backend, label, direct["register_seconds"], "s"))
            else:
                label = f"register one by one, {_REFERENCE} with start-up fetches (fit n^{k:.2f})"
                result.add(Row(NAME, backend, label, predicted, "s"))
            _idle_row(result, backend, runs[-1])
            result.raw[backend] = raw
    return result


def _verdict_row(result: CaseResult, backend: str, label: str, seconds: float) -> None:
    target = f"< {_REGISTER_LIMIT_S:g} s"
    result.add(Row(NAME, backend, label, seconds, "s", target=target, status=verdict(seconds < _REGISTER_LIMIT_S)))


def _idle_row(result: CaseResult, backend: str, last: dict[str, Any]) -> None:
    percent = last["idle_cpu_percent"]
    ok = percent < _IDLE_LIMIT_PERCENT and last["refreshes"] == last["providers"]
    label = f"idle CPU, {last['providers']} warm providers"
    target = f"< {_IDLE_LIMIT_PERCENT:g} %"
    result.add(Row(NAME, backend, label, percent, "% of a core", target=target, status=verdict(ok)))
