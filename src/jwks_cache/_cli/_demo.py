"""``jwks-cache demo``: the library's promises, shown against local identity providers in seconds.

It is the first thing a newcomer runs, so every number printed is measured, not asserted from
the docs: request counts come from the providers' own counters, and a result that contradicts
the claim next to it is flagged and turns the exit code to 1.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any, Final, TextIO

import anyio

from .._clock import SystemClock
from .._config import ProviderConfig, RetryPolicy
from .._errors import FetchError, JwksCacheError
from .._models import ProviderState, ProviderStatus
from .._runtime._registry import Registry
from ..testing import LocalIdentityProvider, VirtualClock
from ._text import format_table
from ._timing import DictFloor, best_per_call, time_async, time_sync

__all__ = ["run_demo"]

_TENANTS: Final = (("acme", "RS256"), ("globex", "ES256"), ("initech", "EdDSA"))
_PROVIDER: Final = "idp"
_MAIN, _OUTAGE = "reg", "outage"  # the status table's names for the two registries
_CALLERS: Final = 1_000
# Per contender: 100 batches of 2,000 calls (benchmarks/lookup.py: 150 with --quick, 1,000 in full),
# about 0.3 s in all; the best batch is what the README's table reports.
_TIMING_CALLS: Final = 2_000
_TIMING_BATCHES: Final = 100
_AUDIENCE: Final = "demo-api"
_NO_RETRY: Final = RetryPolicy(max_retries=0)  # one request per failed refresh keeps the outage short to watch
_BOLD, _GREEN, _YELLOW, _RED, _RESET = "\x1b[1m", "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m"
_STATE_COLOURS: Final = {ProviderState.READY: _GREEN, ProviderState.STALE: _YELLOW, ProviderState.FAILED: _RED}


class _Out:
    """Aligned plain-text output; colour only on a terminal, and never with NO_COLOR set."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.colour = stream.isatty() and "NO_COLOR" not in os.environ
        self.problems: list[str] = []

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def heading(self, text: str) -> None:
        self.line()
        self.line(self.paint(text, _BOLD))

    def row(self, label: str, value: str) -> None:
        self.line(f"   {label:<20} {value}")

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour else text

    def state(self, state: ProviderState) -> str:
        return self.paint(state.name, _STATE_COLOURS.get(state, ""))

    def check(self, ok: bool, claim: str) -> None:
        if not ok:
            self.problems.append(claim)
            self.line(self.paint(f"   !! expected {claim}", _RED))


class _Records(logging.Handler):
    """Collects the library's warnings so the demo can count them instead of interleaving them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _config(tenant: str, idp: LocalIdentityProvider, **changes: Any) -> ProviderConfig:
    return ProviderConfig(tenant=tenant, provider=_PROVIDER, jwks_url=idp.jwks_url, require_https=False, **changes)


def _requests(count: int) -> str:
    return f"{count:,} upstream request{'' if count == 1 else 's'}"


async def run_demo(stream: TextIO, *, quick: bool = False, backend: str = "asyncio") -> list[str]:
    """Run the tour and print it to ``stream``; returns the claims that were not borne out (none, normally)."""
    out = _Out(stream)
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        idps = {
            tenant: await stack.enter_async_context(LocalIdentityProvider(alg=alg, keys=2)) for tenant, alg in _TENANTS
        }
        _intro(out, idps)
        reg = await stack.enter_async_context(Registry(allow_private_networks=True, require_https=False))
        await _cold_start(out, reg, idps["acme"])
        for tenant in ("globex", "initech"):
            await reg.register(_config(tenant, idps[tenant]))
            await reg.resolve(tenant, _PROVIDER)
        await _warm_lookups(out, reg, idps["acme"], quick=quick, backend=backend)
        await _revalidation(out, reg, idps["globex"])
        await _rotation(out, reg, idps["acme"])
        outage = await _outage(out, idps["initech"])
        _status_table(out, [(_MAIN, s) for s in reg.statuses()] + [(_OUTAGE, outage)])
    out.line()
    out.line(f"done in {time.perf_counter() - started:.1f} s on {backend}.")
    out.line("Next: jwks-cache inspect --issuer https://accounts.google.com   (a real IdP, default policy)")
    return out.problems


def _intro(out: _Out, idps: dict[str, LocalIdentityProvider]) -> None:
    out.line(out.paint("jwks-cache demo", _BOLD) + ": three tenants, each with its own identity provider.")
    out.line("Everything runs on this machine: the IdPs are LocalIdentityProvider servers on 127.0.0.1.")
    out.line()
    for tenant, alg in _TENANTS:
        out.row(f"IdP of {tenant}", f"{idps[tenant].jwks_url}   {alg}, keys {', '.join(idps[tenant].kids)}")
    out.row("Registry", "Registry(allow_private_networks=True, require_https=False)")
    out.row("", "both only because these IdPs are plain HTTP on loopback; keep the defaults in production")
    out.row("registrations", "reg.register(ProviderConfig(tenant=..., provider='idp', jwks_url=...)) per tenant")


async def _cold_start(out: _Out, reg: Registry, idp: LocalIdentityProvider) -> None:
    out.heading(f"1. Cold start: {_CALLERS:,} concurrent get_key() calls before any key is cached (acme)")
    await reg.register(_config("acme", idp))
    kid = idp.kids[0]
    got: list[str | None] = []
    errors: list[JwksCacheError] = []

    async def caller() -> None:
        try:
            got.append((await reg.get_key("acme", _PROVIDER, kid)).kid)
        except JwksCacheError as exc:  # one line for the user, not a group of a thousand
            errors.append(exc)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(_CALLERS):
            tg.start_soon(caller)
    elapsed_ms = (time.perf_counter() - began) * 1000
    if errors:
        raise errors[0]
    out.row("callers", f"{len(got):,} got key {kid!r} in {elapsed_ms:.0f} ms")
    out.row("upstream", f"{_requests(idp.request_count)} (idp.request_count): one shared fetch")
    out.check(idp.request_count == 1 and got == [kid] * _CALLERS, "1 upstream request for every caller")


async def _lookup_timings(reg: Registry, kid: str) -> dict[str, float]:
    """ns per call of each contender, timed as benchmarks/lookup.py (and so the README) times them."""
    floor = DictFloor({kid: reg.get_key_nowait("acme", _PROVIDER, kid)})
    t, p = "acme", _PROVIDER

    async def floor_batch(n: int) -> int:
        return await time_async(lambda: floor.get_key(t, p, kid), n)

    async def sync_floor_batch(n: int) -> int:
        return time_sync(lambda: floor.get_key_sync(t, p, kid), n)

    async def get_key_batch(n: int) -> int:
        return await time_async(lambda: reg.get_key(t, p, kid), n)

    async def nowait_batch(n: int) -> int:
        return time_sync(lambda: reg.get_key_nowait(t, p, kid), n)

    contenders = {"floor": floor_batch, "get_key": get_key_batch, "nowait": nowait_batch, "sync": sync_floor_batch}
    return await best_per_call(contenders, _TIMING_CALLS, _TIMING_BATCHES)


async def _warm_lookups(out: _Out, reg: Registry, idp: LocalIdentityProvider, *, quick: bool, backend: str) -> None:
    out.heading(f"2. Warm lookups: keys cached, no lock, no I/O (acme, {backend})")
    if quick:
        out.row("timing", "skipped (--quick)")
        return
    before = idp.request_count
    ns = await _lookup_timings(reg, idp.kids[0])
    floor = ns["floor"]
    rows = [
        ["floor: await of a dict read", f"{floor:,.0f}", "1.0x", "the least any awaited key lookup costs"],
        ["await reg.get_key()", f"{ns['get_key']:,.0f}", f"{ns['get_key'] / floor:.1f}x", ""],
        ["reg.get_key_nowait()", f"{ns['nowait']:,.0f}", f"{ns['nowait'] / floor:.1f}x", ""],
        ["a plain call reading a dict", f"{ns['sync']:,.0f}", f"{ns['sync'] / floor:.1f}x", "for reference"],
    ]
    for line in format_table(["", "ns/call", "vs floor", ""], rows, right=frozenset({1, 2})):
        out.line(f"   {line}")
    out.row("floor", "an awaited async method whose body is only `return keys[kid]`: no awaited lookup does less")
    out.row("method", f"best of {_TIMING_BATCHES} interleaved batches of {_TIMING_CALLS:,} calls, collector paused:")
    out.row("", "how benchmarks/lookup.py times the README's Performance table, so the ratios compare")
    requests = idp.request_count - before
    out.row("upstream", f"{_requests(requests)} during the loops")
    out.check(requests == 0, "no upstream request for cached keys")


async def _revalidation(out: _Out, reg: Registry, idp: LocalIdentityProvider) -> None:
    out.heading("3. Revalidation: await reg.refresh('globex', 'idp') on an unchanged key set")
    before = reg.status("globex", _PROVIDER)
    await reg.refresh("globex", _PROVIDER)
    etag = idp.requests[-1].headers.get("if-none-match")
    status = reg.status("globex", _PROVIDER)
    answered_304 = status.revalidations == before.revalidations + 1
    out.row("request", f"GET /jwks with If-None-Match: {etag}" if etag else "GET /jwks without If-None-Match")
    out.row("IdP answered", "304 Not Modified: keys kept, freshness extended" if answered_304 else "200 (a full body)")
    out.row("state", f"{out.state(status.state)}, same keys: {', '.join(status.key_ids)}")
    out.row("upstream", f"{_requests(idp.request_count)} in all (first fetch + revalidation)")
    same = status.key_ids == before.key_ids
    out.check(etag is not None and answered_304 and same and status.state is ProviderState.READY, "a 304")


async def _rotation(out: _Out, reg: Registry, idp: LocalIdentityProvider) -> None:
    out.heading("4. Key rotation: acme's IdP publishes a new key and signs a token with it")
    before = idp.request_count
    retired, new = idp.kids[0], idp.rotate()
    now = SystemClock().time()
    token = idp.mint({"sub": "alice", "aud": _AUDIENCE, "iat": int(now), "exp": int(now) + 300}, kid=new)
    claims = await reg.verify(token, tenant="acme", provider=_PROVIDER, audience=_AUDIENCE)
    extra = idp.request_count - before
    unconditional = "if-none-match" not in idp.requests[-1].headers
    out.row("IdP", f"rotate(): publishes {new!r}, retires {retired!r}")
    out.row("reg.verify()", f"ok: sub={claims['sub']!r}, signed with {new!r}")
    out.row("upstream", f"+{_requests(extra)}: the unknown kid triggered one unconditional refresh")
    out.row("keys now", ", ".join(reg.status("acme", _PROVIDER).key_ids))
    out.check(extra == 1 and unconditional, "+1 unconditional upstream request for the new kid")


async def _outage(out: _Out, idp: LocalIdentityProvider) -> ProviderStatus:
    out.heading("5. Outage: initech's IdP answers 503, watched by a Registry(clock=VirtualClock())")
    out.line("   (virtual time jumps past expiry at once; the HTTP requests are still real)")
    clock = VirtualClock()
    idp.cache_control = "max-age=60"
    logs = _Records()
    logger = logging.getLogger("jwks_cache")
    logger.addHandler(logs)
    try:
        return await _outage_steps(out, idp, clock, logs)
    finally:
        logger.removeHandler(logs)


async def _outage_steps(out: _Out, idp: LocalIdentityProvider, clock: VirtualClock, logs: _Records) -> ProviderStatus:
    async with Registry(allow_private_networks=True, require_https=False, clock=clock) as reg:
        await reg.register(_config("initech", idp, stale_while_error=60.0, prefetch_jitter=0.0, retry=_NO_RETRY))
        kid = idp.kids[0]
        await reg.get_key("initech", _PROVIDER, kid)
        out.row("t=0", "keys fetched: max-age=60, stale_while_error=60")
        idp.fail(503)
        await clock.advance(61.0)
        stale = reg.status("initech", _PROVIDER)
        served = (await reg.get_key("initech", _PROVIDER, kid)).kid
        out.row(
            "t=61 s, IdP down", f"{out.state(stale.state)}: get_key({kid!r}) still answers {served!r} (last good set)"
        )
        out.row("", f"last error: {stale.last_error}")
        out.row(
            "", f"{_failed_refreshes(stale)} so far (status.refresh_errors): one per backoff step since the prefetch"
        )
        out.row("", f"WARNINGs on the 'jwks_cache' logger: {_warnings_by_event(logs)}")
        await clock.advance(60.0)
        try:
            await reg.get_key("initech", _PROVIDER, kid)
        except FetchError:
            closed = True
        else:
            closed = False
        failed = reg.status("initech", _PROVIDER)
        out.row("t=121 s", f"{out.state(failed.state)}: get_key() raises FetchError (fails closed, no stale keys)")
        out.row("", f"{_failed_refreshes(failed)} in all (status.refresh_errors)")
        idp.recover()
        await clock.advance(20.0)  # failure backoff is capped at min_ttl / 2
        final = reg.status("initech", _PROVIDER)
        out.row("t=141 s, IdP back", f"{out.state(final.state)} again after the next retry")
    out.check(
        stale.state is ProviderState.STALE
        and closed
        and failed.state is ProviderState.FAILED
        and final.state is ProviderState.READY,
        "STALE, then FAILED after stale_while_error, then READY",
    )
    return final


def _failed_refreshes(status: ProviderStatus) -> str:
    return f"{status.refresh_errors} failed refresh{'' if status.refresh_errors == 1 else 'es'}"


def _warnings_by_event(logs: _Records) -> str:
    """Counts per ``event`` field: one 'refresh_failed' per failed refresh, one 'stale_started' per episode."""
    counts = Counter(str(getattr(record, "event", record.getMessage())) for record in logs.records)
    return ", ".join(f"{count} {event}" for event, count in counts.items()) or "none"


def _status_table(out: _Out, statuses: list[tuple[str, ProviderStatus]]) -> None:
    out.heading("6. reg.statuses(), and the status of section 5's registry")
    headers = ["registry", "tenant", "provider", "state", "keys", "hits", "misses", "stale", "refreshes", "failed"]
    rows = [
        [
            registry,
            s.tenant,
            s.provider,
            s.state.name,
            str(len(s.key_ids)),
            f"{s.hits:,}",
            f"{s.misses:,}",
            f"{s.stale_serves:,}",
            f"{s.refreshes:,}",
            f"{s.refresh_errors:,}",
        ]
        for registry, s in statuses
    ]
    for line in format_table(headers, rows, right=frozenset(range(4, 10))):
        out.line(f"   {line}")
    out.row("registry", f"{_MAIN}: sections 1-4, real clock; {_OUTAGE}: section 5's Registry(clock=VirtualClock()).")
    out.row("", "initech is registered in both, so it has a row in each")
    out.row("hits, misses", "lookups answered with a key (stale ones included); lookups that found no usable key")
    out.row("stale", "hits answered from an expired set, inside stale_while_error")
    out.row("refreshes, failed", "fetches that succeeded (200 or 304); attempts that failed (status.refresh_errors)")
