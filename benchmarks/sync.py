"""Threaded verification: ``jwks_cache.sync.SyncRegistry`` against PyJWT's ``PyJWKClient``.

What a Flask or Django service does: many request threads verifying tokens at once. Both sides
verify the same RS256 token from the same LocalIdentityProvider (on a loop of its own thread) and
check the same claims; PyJWKClient keeps its key cache (``cache_keys`` and the JWK Set cache), so
neither fetches inside the timed rounds. Each side runs ``THREADS`` threads released together by
a barrier; a round's figure is tokens over wall time, and the best round wins (noise on a shared
machine only ever slows a round). Single-thread latencies show what a warm call costs: the
facade's ``verify`` and ``get_key`` answer from fresh cached keys in the calling thread
(``Registry.verify_nowait``, ``get_key_nowait``) and cross to the registry's loop thread through
an anyio portal only when a token needs a fetch or a refresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

import jwt as pyjwt

from jwks_cache.sync import SyncRegistry

from ._common import BACKENDS, PROVIDER, TENANT, CaseResult, Row, config, idp_in_thread, verdict

NAME = "sync"
THREADS: Final = 8
_AUDIENCE = "bench-api"


def _threaded_rate(verify: Callable[[], object], per_thread: int, rounds: int) -> float:
    """Best tokens/s over ``rounds``, each ``THREADS`` threads verifying ``per_thread`` tokens."""
    best = 0.0
    for _ in range(rounds):
        barrier = threading.Barrier(THREADS + 1)
        failures: list[BaseException] = []

        def work(barrier: threading.Barrier = barrier, failures: list[BaseException] = failures) -> None:
            barrier.wait()
            try:
                for _ in range(per_thread):
                    verify()
            except BaseException as exc:  # reported below: a failed side must not look fast
                failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        if failures:
            raise failures[0]
        best = max(best, THREADS * per_thread / elapsed)
    return best


def _latency_us(call: Callable[[], object], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter_ns()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter_ns() - began) / calls / 1000)
    return best


def _pyjwk_verifier(jwks_url: str, token: str, issuer: str) -> Callable[[], object]:
    client = pyjwt.PyJWKClient(jwks_url, cache_keys=True)

    def verify() -> object:
        key = client.get_signing_key_from_jwt(token)
        return pyjwt.decode(token, key.key, algorithms=["RS256"], audience=_AUDIENCE, issuer=issuer)

    return verify


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    per_thread, rounds, calls = (100, 3, 200) if quick else (500, 5, 1000)
    with idp_in_thread(keys=1, alg="RS256") as (idp, _portal):
        now = int(time.time())
        token = idp.mint({"sub": "user-1", "aud": _AUDIENCE, "iat": now, "exp": now + 86_400})
        issuer = idp.jwks_url.rsplit("/", 1)[0]
        peer = _pyjwk_verifier(idp.jwks_url, token, issuer)
        peer()  # fetches once and must accept the token before it is timed
        peer_rate = _threaded_rate(peer, per_thread, rounds)
        peer_us = _latency_us(peer, calls, rounds)
        result.raw["pyjwkclient"] = {"tokens_per_s": peer_rate, "us_per_token_1_thread": peer_us}
        result.add(Row(NAME, "-", f"PyJWKClient, {THREADS} threads", peer_rate, "tokens/s"))
        result.add(Row(NAME, "-", "PyJWKClient, 1 thread", peer_us, "us/token"))
        for backend in BACKENDS:
            _measure(result, backend, idp.jwks_url, token, issuer, peer_rate, per_thread, rounds, calls)
    result.notes.append(
        "sync: SyncRegistry.verify and get_key answer from fresh cached keys in the calling thread; "
        "they cross to the registry's loop thread (anyio portal) only for a fetch or a refresh."
    )
    return result


def _measure(
    result: CaseResult,
    backend: str,
    jwks_url: str,
    token: str,
    issuer: str,
    peer_rate: float,
    per_thread: int,
    rounds: int,
    calls: int,
) -> None:
    with SyncRegistry(backend=backend, allow_private_networks=True, require_https=False) as reg:
        reg.register(config(jwks_url))

        def verify() -> dict[str, Any]:
            return reg.verify(token, tenant=TENANT, provider=PROVIDER, audience=_AUDIENCE, issuer=issuer)

        assert verify()["aud"] == _AUDIENCE
        kid = reg.statuses()[0].key_ids[0]
        rate = _threaded_rate(verify, per_thread, rounds)
        verify_us = _latency_us(verify, calls, rounds)
        get_key_us = _latency_us(lambda: reg.get_key(TENANT, PROVIDER, kid), calls * 10, rounds)
        fetches = reg.statuses()[0].refreshes
    result.raw[backend] = {
        "tokens_per_s": rate,
        "us_per_verify_1_thread": verify_us,
        "us_per_get_key_1_thread": get_key_us,
        "fetches": fetches,
    }
    ratio = rate / peer_rate
    result.add(
        Row(
            NAME,
            backend,
            f"SyncRegistry.verify, {THREADS} threads",
            rate,
            "tokens/s",
            "PyJWKClient",
            ratio,
            ">= 1x",
            verdict(ratio >= 1.0),
        )
    )
    result.add(Row(NAME, backend, "SyncRegistry.verify, 1 thread", verify_us, "us/token"))
    result.add(Row(NAME, backend, "SyncRegistry.get_key warm, 1 thread", get_key_us, "us/call"))
