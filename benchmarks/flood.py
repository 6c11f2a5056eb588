"""Unknown-kid flood: 10,000 random kids over 60 s of virtual time, while known kids keep being served.

The registry runs on a VirtualClock so a minute of attack costs a few real seconds; the identity
provider lives in the same loop (as in the integration tests) so the clock can settle its I/O.
The flood arrives in steps of concurrent lookups. In every step a separate task looks a known kid up
200 times, one timed call then a checkpoint, so its calls interleave with the bogus ones; each flood
step is paired with a baseline step that has the same shape but no flood, so machine load hits both.
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import anyio.lowlevel

from jwks_cache import KeyNotFoundError
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

from ._common import BACKENDS, PROVIDER, TENANT, CaseResult, Row, config, loopback_registry, percentile, verdict

NAME = "unknown-kid flood"
_BOGUS = 10_000
_SPAN = 60.0  # virtual seconds the flood lasts
_STEPS = 100
_KNOWN_PER_STEP = 200
_MAX_REQUESTS = 3
# "unchanged": within 1.5x or 1 us of the no-flood p99. Sub-microsecond tails move with cache pollution
# from the interleaved flood tasks; what the target guards against, a known kid waiting on the flood's
# fetch or a lock, costs hundreds of microseconds and cannot hide under this bound.
_P99_FACTOR = 1.5
_P99_SLACK_NS = 1_000


async def _known_lookups(reg: Any, kid: str, samples: list[int]) -> None:
    for _ in range(_KNOWN_PER_STEP):
        began = time.perf_counter_ns()
        await reg.get_key(TENANT, PROVIDER, kid)
        samples.append(time.perf_counter_ns() - began)
        await anyio.lowlevel.checkpoint()  # let the flood's tasks run between known lookups


async def _flood(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    clock = VirtualClock()
    baseline: list[int] = []
    during: list[int] = []
    rejected = failed = 0
    async with LocalIdentityProvider(keys=2) as idp, loopback_registry(clock=clock, rng=rng) as reg:
        await reg.register(config(idp.jwks_url))
        kid = idp.kids[0]
        await reg.get_key(TENANT, PROVIDER, kid)
        before = idp.request_count
        per_step = _BOGUS // _STEPS

        async def bogus() -> None:
            nonlocal rejected, failed
            try:
                await reg.get_key(TENANT, PROVIDER, f"bogus-{rng.getrandbits(64):016x}")
            except KeyNotFoundError:
                rejected += 1
            except Exception:
                failed += 1

        with anyio.fail_after(120):  # real seconds; the flood itself runs in virtual time
            for _ in range(_STEPS):
                await _known_lookups(reg, kid, baseline)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_known_lookups, reg, kid, during)
                    for _ in range(per_step):
                        tg.start_soon(bogus)
                await clock.advance(_SPAN / _STEPS)
        requests = idp.request_count - before
        status = reg.status(TENANT, PROVIDER)
    return {
        "bogus_lookups": per_step * _STEPS,
        "rejected": rejected,
        "other_errors": failed,
        "upstream_requests": requests,
        "virtual_seconds": _SPAN,
        "known_p50_ns": {"baseline": percentile(baseline, 50), "during": percentile(during, 50)},
        "known_p99_ns": {"baseline": percentile(baseline, 99), "during": percentile(during, 99)},
        "known_samples": {"baseline": len(baseline), "during": len(during)},
        "misses": status.misses,
    }


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst request count over the runs, best (lowest) p99s: noise only ever adds time."""
    best = dict(runs[0])
    best["upstream_requests"] = max(r["upstream_requests"] for r in runs)
    best["other_errors"] = sum(r["other_errors"] for r in runs)
    for field in ("known_p50_ns", "known_p99_ns"):
        best[field] = {k: min(r[field][k] for r in runs) for k in ("baseline", "during")}
    return best


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    runs = 2 if quick else 5
    for backend in BACKENDS:
        every = [anyio.run(_flood, seed, backend=backend) for seed in range(runs)]
        s = _best(every)
        result.raw[backend] = {"best": s, "runs": every}
        requests = s["upstream_requests"]
        result.add(
            Row(
                NAME,
                backend,
                f"upstream requests ({s['bogus_lookups']} kids / {_SPAN:g} s)",
                requests,
                "requests",
                target=f"<= {_MAX_REQUESTS}",
                status=verdict(requests <= _MAX_REQUESTS and s["other_errors"] == 0),
            )
        )
        base, during = s["known_p99_ns"]["baseline"], s["known_p99_ns"]["during"]
        result.add(Row(NAME, backend, "known-kid p50, no flood", s["known_p50_ns"]["baseline"], "ns"))
        result.add(Row(NAME, backend, "known-kid p50 during flood", s["known_p50_ns"]["during"], "ns"))
        result.add(Row(NAME, backend, "known-kid p99, no flood", base, "ns"))
        result.add(
            Row(
                NAME,
                backend,
                "known-kid p99 during flood",
                during,
                "ns",
                "no-flood p99",
                during / base,
                f"<= max({_P99_FACTOR:g}x, +{_P99_SLACK_NS / 1000:g} us)",
                verdict(during <= max(_P99_FACTOR * base, base + _P99_SLACK_NS)),
            )
        )
    result.notes.append("known-kid latencies are single awaited get_key calls timed with perf_counter_ns.")
    return result
