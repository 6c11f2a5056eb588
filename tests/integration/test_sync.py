"""The blocking facade (jwks_cache.sync) and the Flask and Django examples built on it.

These tests are synchronous, as the code they exercise: the identity provider runs on an event
loop of its own thread, the facade on another, and the test thread calls both as plain functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

import jwks_cache
from helpers import PROVIDER, TENANT, config_for
from jwks_cache import (
    ConfigError,
    FetchError,
    FileStore,
    KeyNotFoundError,
    NotRegisteredError,
    RegistryClosedError,
    TokenError,
)
from jwks_cache.sync import SyncRegistry
from jwks_cache.testing import LocalIdentityProvider

#: the jwks_cache this test imported, for its subprocesses too
SOURCES = str(Path(jwks_cache.__file__).resolve().parents[1])
LOOPBACK: dict[str, Any] = {"allow_private_networks": True, "require_https": False}
THREADS = 8


@pytest.fixture
def idp() -> Iterator[LocalIdentityProvider]:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(LocalIdentityProvider(keys=1)) as server,
    ):
        yield server


def token(idp: LocalIdentityProvider, **claims: Any) -> str:
    return idp.mint({"sub": "alice", "exp": int(time.time()) + 600, **claims})


def test_verify_from_threads_at_once_shares_one_fetch(idp: LocalIdentityProvider, backend: str) -> None:
    good = token(idp)
    barrier = threading.Barrier(THREADS)
    results: list[object] = []

    def verify(reg: SyncRegistry) -> None:
        barrier.wait(timeout=10)
        try:
            results.append(reg.verify(good, tenant=TENANT, provider=PROVIDER, timeout=10))
        except Exception as exc:  # collected, so a failure shows its type rather than a silent thread
            results.append(exc)

    with SyncRegistry(backend=backend, **LOOPBACK) as reg:
        reg.register(config_for(idp))
        threads = [threading.Thread(target=verify, args=(reg,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert [r["sub"] if isinstance(r, dict) else r for r in results] == ["alice"] * THREADS
        assert idp.request_count == 1
        # warm now: lookups from threads are answered without another fetch
        assert reg.get_key(TENANT, PROVIDER, "key-1") is not None
        assert reg.statuses()[0].key_ids == ("key-1",)
    assert idp.request_count == 1


def test_errors_are_reraised_with_their_types(idp: LocalIdentityProvider, backend: str) -> None:
    good = token(idp)
    with SyncRegistry(backend=backend, **LOOPBACK) as reg:
        reg.register(config_for(idp))
        with pytest.raises(TokenError) as bad:
            reg.verify(good[:-6] + "AAAAAA", tenant=TENANT, provider=PROVIDER)
        assert bad.value.reason == "bad_signature"
        with pytest.raises(TokenError) as expired:
            reg.verify(token(idp, exp=int(time.time()) - 600), tenant=TENANT, provider=PROVIDER)
        assert expired.value.reason == "expired"
        with pytest.raises(NotRegisteredError):
            reg.verify(good, tenant="other", provider=PROVIDER)
        with pytest.raises(KeyNotFoundError):
            reg.get_key(TENANT, PROVIDER, "no-such-kid")
        with pytest.raises(ConfigError):
            reg.verify(good, tenant=TENANT, provider=PROVIDER, leeway=-1)
        assert reg.unregister(TENANT, PROVIDER) is True
        assert reg.unregister(TENANT, PROVIDER) is False


def test_fetch_failure_is_a_fetch_error(idp: LocalIdentityProvider) -> None:
    idp.fail(404)
    with SyncRegistry(**LOOPBACK) as reg:
        reg.register(config_for(idp))
        with pytest.raises(FetchError):
            reg.get_key(TENANT, PROVIDER, "key-1", timeout=10)
        cold = reg.warm(max_wait=0.01)
        assert [(s.tenant, s.provider) for s in cold] == [(TENANT, PROVIDER)]


def test_timeout_bounds_a_call(idp: LocalIdentityProvider) -> None:
    idp.stall(30)  # the close below cuts it: the IdP cancels stalls on exit
    with SyncRegistry(**LOOPBACK) as reg:
        reg.register(config_for(idp))
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            reg.get_key(TENANT, PROVIDER, "key-1", timeout=0.05)
        assert time.monotonic() - began < 5
        with pytest.raises(ConfigError, match="timeout"):
            reg.get_key(TENANT, PROVIDER, "key-1", timeout=-1)


def test_close_flushes_the_store_and_later_use_raises(idp: LocalIdentityProvider, tmp_path: Path) -> None:
    reg = SyncRegistry(store=FileStore(tmp_path), **LOOPBACK).start()
    reg.register(config_for(idp))
    assert reg.warm(max_wait=10) == []
    reg.close()
    assert [p.name for p in tmp_path.glob("*.jwks")] == [f"{TENANT}~{PROVIDER}.jwks"]
    reg.close()  # twice is fine
    assert reg.closed
    with pytest.raises(RegistryClosedError):
        reg.verify(token(idp), tenant=TENANT, provider=PROVIDER)
    with pytest.raises(RegistryClosedError):
        reg.get_key(TENANT, PROVIDER, "key-1")
    with pytest.raises(RegistryClosedError):
        reg.statuses()
    with pytest.raises(RegistryClosedError):
        reg.start()  # once, as a Registry


def test_a_restart_is_warm_from_the_flushed_store(idp: LocalIdentityProvider, tmp_path: Path) -> None:
    with SyncRegistry(store=FileStore(tmp_path), **LOOPBACK) as reg:
        reg.register(config_for(idp))
        reg.verify(token(idp), tenant=TENANT, provider=PROVIDER)
    with SyncRegistry(store=FileStore(tmp_path), backend="trio", **LOOPBACK) as again:
        again.register(config_for(idp))
        assert again.verify(token(idp), tenant=TENANT, provider=PROVIDER)["sub"] == "alice"
    assert idp.request_count == 1


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="backend"):
        SyncRegistry(backend="curio")
    with pytest.raises(ConfigError, match="timeout"):
        SyncRegistry(timeout=0)
    reg = SyncRegistry(max_concurrent_fetches=1)
    with pytest.raises(ConfigError, match="max_concurrent_fetches"):
        reg.start()  # the Registry's own checks, raised in the caller's thread
    with pytest.raises(RegistryClosedError):
        reg.statuses()
    with pytest.raises(RegistryClosedError):
        SyncRegistry().verify("x", tenant=TENANT, provider=PROVIDER)  # never started
    closed_first = SyncRegistry()
    closed_first.close()
    with pytest.raises(RegistryClosedError):
        closed_first.start()


#: Started, used, never closed: the interpreter's exit must close it (flushing the store) quietly.
_UNCLOSED = """
import sys, time
from anyio.from_thread import start_blocking_portal
from jwks_cache import FileStore, ProviderConfig
from jwks_cache.sync import SyncRegistry
from jwks_cache.testing import LocalIdentityProvider


class ReportingStore(FileStore):
    async def aclose(self):
        await super().aclose()
        print("store closed", flush=True)  # the registry's exit, which flushes before it, has run


with start_blocking_portal() as portal, portal.wrap_async_context_manager(LocalIdentityProvider(keys=1)) as idp:
    reg = SyncRegistry(backend=sys.argv[2], store=ReportingStore(sys.argv[1]), allow_private_networks=True,
                       require_https=False).start()
    reg.register(ProviderConfig(tenant="acme", provider="idp", jwks_url=idp.jwks_url, require_https=False))
    reg.verify(idp.mint({"sub": "a", "exp": int(time.time()) + 60}), tenant="acme", provider="idp")
    keep = reg  # referenced until the interpreter exits: only the atexit path can close it
print("done")
"""


@pytest.mark.parametrize("backend_name", ["asyncio", "trio"])
def test_an_unclosed_facade_is_closed_at_exit(tmp_path: Path, backend_name: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SOURCES, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(_UNCLOSED), str(tmp_path), backend_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\nstore closed\n", "")
    assert [p.name for p in tmp_path.glob("*.jwks")] == [f"{TENANT}~{PROVIDER}.jwks"]


# -- the Flask and Django examples -------------------------------------------------------------------


def _tokens(idp: LocalIdentityProvider) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "alice", "aud": "orders", "exp": now + 600}
    return {
        "good": idp.mint({**good, "scope": "orders:read"}),
        "no_scope": idp.mint(good),
        "expired": idp.mint({**good, "exp": now - 600}),
        "forged": idp.mint(good)[:-6] + "AAAAAA",
    }


def _provider(idp: LocalIdentityProvider) -> Any:
    return config_for(idp, tenant="acme", provider="local", audience="orders")


#: (path, token name or None, status, WWW-Authenticate)
CASES = [
    ("/whoami", "good", 200, None),
    ("/orders", "good", 200, None),
    ("/orders", "no_scope", 403, 'Bearer error="insufficient_scope", scope="orders:read"'),
    ("/whoami", "expired", 401, 'Bearer error="invalid_token", error_description="expired"'),
    ("/whoami", "forged", 401, 'Bearer error="invalid_token", error_description="bad_signature"'),
    ("/tenants/other/whoami", "good", 401, 'Bearer error="invalid_token", error_description="not_registered"'),
    ("/whoami", None, 401, "Bearer"),
    ("/whoami", "Basic dXNlcjpwYXNz", 401, "Bearer"),
    # RFC 6750 §3.1: a Bearer header without a (well-formed) token is a malformed request
    ("/whoami", "Bearer ", 400, 'Bearer error="invalid_request", error_description="malformed_header"'),
    ("/whoami", "Bearer a b", 400, 'Bearer error="invalid_request", error_description="malformed_header"'),
]


def _header(tokens: dict[str, str], name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    return {"Authorization": f"Bearer {tokens[name]}" if name in tokens else name}


def test_flask_example(idp: LocalIdentityProvider) -> None:
    from examples.flask_app import create_app

    app = create_app([_provider(idp)], **LOOPBACK)
    tokens = _tokens(idp)
    try:
        client = app.test_client()
        for path, name, status, challenge in CASES:
            response = client.get(path, headers=_header(tokens, name))
            assert (path, name, response.status_code, response.headers.get("WWW-Authenticate")) == (
                path,
                name,
                status,
                challenge,
            )
        assert client.get("/tenants/acme/whoami", headers=_header(tokens, "good")).get_json() == {
            "tenant": "acme",
            "sub": "alice",
        }
        idp.fail(503)
        app.extensions["jwks_cache"].run(lambda registry: registry.unregister("acme", "local"))
        app.extensions["jwks_cache"].register(_provider(idp))  # cold again, and the IdP is down
        down = client.get("/whoami", headers=_header(tokens, "good"))
        assert (down.status_code, down.get_json()["error"]) == (503, "temporarily_unavailable")
        assert (down.headers["Retry-After"], down.headers.get("WWW-Authenticate")) == ("5", None)
    finally:
        app.extensions["jwks_cache"].close()


def test_django_example(idp: LocalIdentityProvider) -> None:
    from django.test import Client
    from examples.django_app import start_registry

    registry = start_registry([_provider(idp)], **LOOPBACK)
    tokens = _tokens(idp)
    try:
        client = Client()
        for path, name, status, challenge in CASES:
            response = client.get(path, headers=_header(tokens, name))
            assert (path, name, response.status_code, response.headers.get("WWW-Authenticate")) == (
                path,
                name,
                status,
                challenge,
            )
        assert client.get("/orders", headers=_header(tokens, "good")).json() == {"orders": [], "for": "alice"}
    finally:
        registry.close()
    assert idp.request_count == 2  # the first fetch, and the one refresh a bad signature under a known kid earns
