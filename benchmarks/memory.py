"""Memory for N providers x 5 RSA keys: a warm Registry against N warm PyJWKClients.

Two scenarios. *distinct*: every provider has its own five keys (what 10,000 tenants with their
own identity providers look like; the verdict is taken here). *shared*: every provider serves the
same document (tenants of one identity provider), where the registry shares one parsed table.
Distinct keys cost nothing to make: RSA public keys need no primes, only a 2048-bit odd modulus,
which neither side checks for factors.

Each measurement runs in a fresh interpreter (``python -m benchmarks.memory worker ...``) so one
side's arenas and caches never count against the other; the identity provider runs in a third
process so its request log and buffers count against neither. RSS (from /proc) and tracemalloc are
measured in separate runs because tracing slows everything and its own bookkeeping inflates RSS.
Figures are the growth from a warmed-up baseline (one provider already fetched) to N warm providers.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._common import CaseResult, Row, config, loopback_registry, rss_bytes, tenant_name, verdict

NAME = "memory"
_KEYS = 5
_TARGET_FRACTION = 1 / 3
_REFERENCE = 10_000
_ROOT = Path(__file__).resolve().parent.parent


# -- child processes ------------------------------------------------------------------------------


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8)).rstrip(b"=").decode()


def jwks_body(index: int) -> bytes:
    """Provider ``index``'s document: five RS256 keys, kids ``k<index>-<j>``, moduli seeded by index."""
    rng = random.Random(index)
    keys = [
        {
            "kty": "RSA",
            "kid": f"k{index}-{j}",
            "use": "sig",
            "alg": "RS256",
            "n": _b64(rng.getrandbits(2048) | (1 << 2047) | 1),
            "e": "AQAB",
        }
        for j in range(_KEYS)
    ]
    return json.dumps({"keys": keys}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an identity provider's CDN would

    def do_GET(self) -> None:
        try:
            index = int(self.path.removeprefix("/t/").removesuffix(".json"))
        except ValueError:
            self.send_error(404)
            return
        body = jwks_body(index)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=300")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass


def _serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"base_url": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()


def _target(base_url: str, scenario: str, index: int) -> tuple[str, str]:
    """(JWKS URL, a kid it serves) for provider ``index``; the shared scenario serves document 0 to all."""
    served = index if scenario == "distinct" else 0
    return f"{base_url}/t/{served}.json", f"k{served}-0"


def _start(trace: bool) -> float:
    gc.collect()
    if trace:
        tracemalloc.start()
        return float(tracemalloc.get_traced_memory()[0])
    return float(rss_bytes())


def _stop(trace: bool, start: float) -> float:
    gc.collect()
    if trace:
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return current - start
    return rss_bytes() - start


async def _ours(base_url: str, scenario: str, n: int, trace: bool) -> float:
    async with loopback_registry() as reg:
        url, kid = _target(base_url, scenario, n)  # the warm-up provider is not among the measured
        await reg.register(config(url, tenant="warmup"))
        await reg.get_key("warmup", "idp", kid)
        start = _start(trace)
        for i in range(n):
            await reg.register(config(_target(base_url, scenario, i)[0], tenant=tenant_name(i)))
        with anyio.fail_after(600):
            for i in range(n):
                await reg.get_key(tenant_name(i), "idp", _target(base_url, scenario, i)[1])
        grown = _stop(trace, start)
        assert all(s.key_ids for s in reg.statuses())
        return grown


def _peer(base_url: str, scenario: str, n: int, trace: bool) -> float:
    import jwt

    def warm(index: int) -> Any:
        url, kid = _target(base_url, scenario, index)
        client = jwt.PyJWKClient(url)
        client.get_signing_key(kid)
        return client

    warm(n)
    start = _start(trace)
    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = list(pool.map(warm, range(n)))
    grown = _stop(trace, start)
    assert len(clients) == n
    return grown


def _worker(side: str, backend: str, n: int, trace: bool, base_url: str, scenario: str) -> None:
    if side == "ours":
        grown = anyio.run(_ours, base_url, scenario, n, trace, backend=backend)
    else:
        grown = _peer(base_url, scenario, n, trace)
    print(json.dumps({"bytes": grown}), flush=True)


# -- the case -------------------------------------------------------------------------------------


def _child(*args: str, timeout: float = 900) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", *args],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


def _sizes(quick: bool) -> dict[str, int]:
    """Providers measured per mode; tracing slows a fetch about fivefold, so it measures fewer."""
    return {"rss": 1_000, "tracemalloc": 300} if quick else {"rss": _REFERENCE, "tracemalloc": 1_000}


_SCENARIOS = ("distinct", "shared")


def _runs(quick: bool) -> list[tuple[str, str, str, str]]:
    """(scenario, side, backend, mode) per child; the quick run measures one backend only (a
    child costs an interpreter start, and the backends' figures agree within a percent)."""
    runs = []
    for scenario in _SCENARIOS:
        runs += [(scenario, "ours", "asyncio", "rss"), (scenario, "pyjwkclient", "threads", "rss")]
        runs += [(scenario, "ours", "asyncio", "tracemalloc"), (scenario, "pyjwkclient", "threads", "tracemalloc")]
        if not quick:
            runs += [(scenario, "ours", "trio", "rss"), (scenario, "ours", "trio", "tracemalloc")]
    return runs


def run(quick: bool) -> CaseResult:
    result = CaseResult(NAME)
    sizes = _sizes(quick)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.memory", "serve"],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = json.loads(server.stdout.readline())["base_url"]
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for scenario, side, backend, mode in _runs(quick):
            began = time.perf_counter()
            grown = _child("worker", side, backend, str(sizes[mode]), mode, base_url, scenario)["bytes"]
            entry = figures.setdefault(scenario, {}).setdefault(f"{side}/{backend}", {})
            entry[mode] = grown
            entry[f"{mode}_seconds"] = time.perf_counter() - began
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    result.raw = {"providers_measured": sizes, "keys_per_provider": _KEYS, "bytes_grown": figures}
    for scenario in _SCENARIOS:
        _rows(result, scenario, figures[scenario], sizes)
    result.notes.append("memory: 'distinct' gives every provider its own 5 keys; 'shared' serves one document to all")
    return result


def _rows(result: CaseResult, scenario: str, figures: dict[str, dict[str, float]], sizes: dict[str, int]) -> None:
    peer = figures["pyjwkclient/threads"]
    for mode in ("rss", "tracemalloc"):
        scale = _REFERENCE / sizes[mode]
        suffix = f" (x{scale:.3g} of {sizes[mode]})" if scale != 1 else ""
        label = f"{scenario} keys: {{who}} x{_REFERENCE} {mode}{suffix}"
        result.add(Row(NAME, "threads", label.format(who="PyJWKClient"), peer[mode] * scale / 2**20, "MiB"))
        for backend in ("asyncio", "trio"):
            ours = figures.get(f"ours/{backend}", {})
            if mode not in ours:
                continue  # not measured in this run (the quick run measures asyncio only)
            ratio = ours[mode] / peer[mode]
            result.add(
                Row(
                    NAME,
                    backend,
                    label.format(who="providers"),
                    ours[mode] * scale / 2**20,
                    "MiB",
                    "PyJWKClient",
                    ratio,
                    "<= 0.33x",
                    verdict(ratio <= _TARGET_FRACTION),
                )
            )


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve()
    else:
        _, _, side_arg, backend_arg, n_arg, mode_arg, url_arg, scenario_arg = sys.argv
        _worker(side_arg, backend_arg, int(n_arg), mode_arg == "tracemalloc", url_arg, scenario_arg)
