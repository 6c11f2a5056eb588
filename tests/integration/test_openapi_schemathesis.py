"""Schemathesis against the control plane's own ``/openapi.json``: every check, zero failures.

The app is served for real (hypercorn's trio worker on 127.0.0.1, port 0) from a blocking portal's
thread, over a Registry running in that same loop: schemathesis's in-process ASGI mode would run the
app on a loop of its own, apart from the Registry's. Schemathesis itself runs as the ``st`` command
in a subprocess, so its phases (examples, coverage, fuzzing, stateful over the document's links)
and its Hypothesis settings stay out of this pytest process; the run is seeded, bounded and
derandomized, and writes nothing outside ``tmp_path``.

Registrations it sends name arbitrary hosts; the Registry's HTTP client routes every request to a
LocalIdentityProvider instead, so the refresh loops they start never leave loopback (and with
``allow_private_networks`` no name is ever resolved).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
from hypercorn.config import Config
from hypercorn.trio import serve
from tests.helpers import config_for

from jwks_cache import Registry
from jwks_cache.asgi import create_app
from jwks_cache.testing import LocalIdentityProvider

TOKEN = "schemathesis-" + "t" * 24
MAX_EXAMPLES = 30
RUN_TIMEOUT_S = 120

# putProvider only: a schema-valid registration may still break a rule JSON Schema cannot state
# (max_ttl >= min_ttl, https under require_https, hosts inside allowed_domains, a body tenant equal to
# the path's), and the app answers those with 422 naming the field. Anything else (400, 413, 415)
# for a schema-valid body is still a failure. getJwks only: a generated registration may name an
# issuer the local identity provider cannot vouch for (its discovery document names its own issuer),
# and the provider then has no usable keys: the documented 503 keys-unavailable, not a server bug.
# Every other check runs as schemathesis ships it.
SCHEMATHESIS_TOML = """\
[[operations]]
include-operation-id = "putProvider"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]

[[operations]]
include-operation-id = "getJwks"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 503]
"""


class _ToLocalIdp(httpx.AsyncBaseTransport):
    """Sends every JWKS or discovery request, whatever its host, to the local identity provider."""

    def __init__(self, idp: LocalIdentityProvider) -> None:
        self._idp = idp
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        discovery = request.url.path.endswith("/.well-known/openid-configuration")
        request.url = httpx.URL(self._idp.discovery_url if discovery else self._idp.jwks_url)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def _control_plane() -> AsyncIterator[str]:
    """The base URL of the app over a Registry with one working provider (acme/idp)."""
    async with (
        LocalIdentityProvider() as idp,
        httpx.AsyncClient(transport=_ToLocalIdp(idp)) as client,
        Registry(require_https=False, allow_private_networks=True, http_client=client) as registry,
    ):
        await registry.register(config_for(idp, tenant="acme", provider="login"))  # the document's example
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.graceful_timeout = 1.0
        app = create_app(registry, admin_token=TOKEN)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            binds: list[str] = await tg.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            try:
                yield binds[0]
            finally:
                stop.set()


def _schemathesis(base_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "10",
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def test_control_plane_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    with (
        anyio.from_thread.start_blocking_portal("trio") as portal,
        portal.wrap_async_context_manager(_control_plane()) as base_url,
    ):
        assert base_url.startswith("http://127.0.0.1:")
        result = _schemathesis(base_url, tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected is not None and tested is not None, report
    assert selected[1] == selected[2] == tested[1], report  # no operation was filtered out or skipped
