"""``jwks-cache serve``: a real subprocess serving the control plane, stopped by SIGINT; config errors exit 2."""

from __future__ import annotations

import gc
import importlib.util
import os
import re
import secrets
import signal
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from jwks_cache import ConfigError, FetchError, FileStore
from jwks_cache._cli._main import main
from jwks_cache._cli._serve import load_serve_config, open_registry, with_ca_file
from jwks_cache.testing import LocalIdentityProvider

ADMIN_ENV = "JWKS_CACHE_TEST_ADMIN_TOKEN"
LOOPBACK_REGISTRY = "[registry]\nrequire_https = false\nallow_private_networks = true\n"
OPEN_READS = "[control_plane]\nprotect_reads = false\n"  # serving without an admin token


def _provider_table(jwks_url: str, *, tenant: str = "acme", provider: str = "local", extra: str = "") -> str:
    return f'[[providers]]\ntenant = "{tenant}"\nprovider = "{provider}"\njwks_url = "{jwks_url}"\n{extra}'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


async def _wait_for_url(process: Process, seen: list[str]) -> str:
    """hypercorn logs the bound address once it listens: the readiness signal, with port 0 resolved."""
    assert process.stderr is not None
    async for chunk in TextReceiveStream(process.stderr):
        seen.append(chunk)
        found = re.search(r"Running on (http://\S+)", "".join(seen))
        if found:
            return found.group(1)
    raise AssertionError(f"serve exited before listening: {''.join(seen)}")


# -- the server ------------------------------------------------------------------------------------


async def test_serve_answers_then_stops_cleanly_on_sigint(
    anyio_backend: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    backend = anyio_backend[0]
    token = secrets.token_urlsafe(32)
    async with LocalIdentityProvider() as idp:
        config = _write(tmp_path, LOOPBACK_REGISTRY + _provider_table(idp.jwks_url))
        argv = [sys.executable, "-m", "jwks_cache", "serve", "--config", str(config), "--port", "0"]
        argv += ["--backend", backend, "--admin-token-env", ADMIN_ENV]
        seen: list[str] = []
        process = await anyio.open_process(argv, env={**os.environ, ADMIN_ENV: token})
        try:
            with anyio.fail_after(30):
                base = await _wait_for_url(process, seen)
                async with httpx.AsyncClient(base_url=base) as client:
                    admin = {"authorization": f"Bearer {token}"}
                    jwks_path = "/tenants/acme/providers/local/jwks"
                    assert (await client.get(jwks_path)).status_code == 401  # reads are protected by default
                    jwks = await client.get(jwks_path, headers=admin)  # waits on the cold fetch
                    assert jwks.status_code == 200, jwks.text
                    assert sorted(key["kid"] for key in jwks.json()["keys"]) == sorted(idp.kids)
                    health = await client.get("/healthz")
                    assert (health.status_code, health.json()) == (200, {"status": "pass"})
                    refresh = "/tenants/acme/providers/local/refresh"
                    assert (await client.post(refresh)).status_code == 401
                    started = await client.post(refresh, headers=admin)
                    assert started.status_code == 202, started.text  # started; SIGINT may land mid-fetch
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0, "".join(seen)
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()


# -- configuration errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (_provider_table("https://idp.example/jwks", extra="min_ttl = 5\n"), "providers[0]: min_ttl"),
        (_provider_table("https://idp.example/jwks", tenant="a b"), "providers[0]: tenant"),
        (_provider_table("https://idp.example/jwks", extra="colour = 1\n"), "unknown field `colour`"),
        (_provider_table("http://idp.example/jwks"), "providers[0]: jwks_url must use https"),
        (_provider_table("https://a.example/j") + _provider_table("https://b.example/j"), "providers[1]: duplicate"),
        ('[registry]\nrequire_https = "no"\n', "[registry]: Expected `bool`"),
        ('[registry]\nallowed_domains = ["Example.COM"]\n', "[registry]: allowed_domains"),
        ("[registry]\nmax_concurrent_fetches = 1\n", "`int` >= 2 - at `$.max_concurrent_fetches`"),
        ("[registry]\nmax_concurrent_fetches = 5000\n", "`int` <= 1024 - at `$.max_concurrent_fetches`"),
        ("[store]\nfile = 3\n", "[store]"),
        ("[server]\nport = 1\n", "unknown field `server`"),
        ("[control_plane]\nprotect_reads = 1\n", "[control_plane]: Expected `bool`"),
        ("[control_plane]\nadmin_token = 'x'\n", "[control_plane]: Object contains unknown field `admin_token`"),
        ("providers = [", "not valid TOML"),
    ],
)
def test_config_errors_exit_2_with_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, names: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["serve", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"jwks-cache: error: {path}: ")
    assert names in captured.err
    assert captured.out == ""


def test_a_registry_floor_refusal_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The provider allows http but the registry, by default, does not: caught at registration.
    table = _provider_table("http://idp.example/jwks", extra="require_https = false\n")
    path = _write(tmp_path, OPEN_READS + table)
    assert main(["serve", "--config", str(path)]) == 2
    assert "providers[0]: require_https" in capsys.readouterr().err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_unset_admin_token_variable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    path = _write(tmp_path, "")
    assert main(["serve", "--config", str(path), "--admin-token-env", ADMIN_ENV]) == 2
    assert f"environment variable {ADMIN_ENV} is not set" in capsys.readouterr().err


def test_without_hypercorn_it_names_the_server_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hypercorn" else real(name, *a))
    assert main(["serve", "--config", str(_write(tmp_path, ""))]) == 2
    assert "install jwks-cache[server]" in capsys.readouterr().err


# -- the file --------------------------------------------------------------------------------------


def test_the_registry_https_setting_is_each_providers_default(tmp_path: Path) -> None:
    text = LOOPBACK_REGISTRY + _provider_table("http://127.0.0.1:9/jwks")
    text += _provider_table("https://idp.example/jwks", provider="strict", extra="require_https = true\n")
    config = load_serve_config(_write(tmp_path, text))
    assert [p.require_https for p in config.providers] == [False, True]
    assert config.registry.allow_private_networks
    assert config.store is None


def test_a_relative_store_directory_is_resolved_against_the_file(tmp_path: Path) -> None:
    config = load_serve_config(_write(tmp_path, '[store]\nfile = "snapshots"\n'))
    store = open_registry(config).store
    assert isinstance(store, FileStore)
    assert store._directory == tmp_path / "snapshots"


async def test_the_registry_table_sets_how_many_fetches_run_at_once(tmp_path: Path) -> None:
    config = load_serve_config(_write(tmp_path, LOOPBACK_REGISTRY + "max_concurrent_fetches = 8\n"))
    async with open_registry(config) as reg:
        stats = reg.runtime_stats()
        assert (stats.fetch_slots, stats.background_slots) == (8, 4)


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\[0\]: min_ttl"):
        load_serve_config(_write(tmp_path, _provider_table("https://idp.example/jwks", extra="min_ttl = 1\n")))


def test_a_port_in_use_is_one_error_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, LOOPBACK_REGISTRY + OPEN_READS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with warnings.catch_warnings():
            # hypercorn leaves the socket whose bind failed for the garbage collector: collect it here
            warnings.simplefilter("ignore", ResourceWarning)
            assert main(["serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]) == 1
            gc.collect()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"jwks-cache: error: serve: cannot listen on 127.0.0.1:{port}: ")


# -- TLS trust -------------------------------------------------------------------------------------


@pytest.fixture
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


_TLS_REGISTRY = "[registry]\nallow_private_networks = true\n"


@pytest.mark.usefixtures("no_env_trust")
async def test_a_ca_file_in_the_registry_table_is_trusted(tmp_path: Path) -> None:
    async with LocalIdentityProvider(tls=True) as idp:
        idp.ca.cert_pem.write_to_path(str(tmp_path / "private-ca.pem"))
        with_ca = _TLS_REGISTRY + 'ca_file = "private-ca.pem"\n'  # relative to the file
        config = load_serve_config(_write(tmp_path, with_ca + _provider_table(idp.jwks_url)))
        assert config.registry.ca_file == str(tmp_path / "private-ca.pem")
        async with open_registry(config) as reg:
            await reg.register(config.providers[0])
            await reg.refresh("acme", "local")
            assert reg.status("acme", "local").key_ids == tuple(idp.kids)
        without = load_serve_config(_write(tmp_path, _TLS_REGISTRY + _provider_table(idp.jwks_url)))
        async with open_registry(without) as reg:
            await reg.register(without.providers[0])
            with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
                await reg.refresh("acme", "local")


@pytest.mark.usefixtures("no_env_trust")
async def test_serve_cacert_replaces_the_files_ca_file(tmp_path: Path) -> None:
    async with LocalIdentityProvider(tls=True) as idp:
        ca = tmp_path / "cli-ca.pem"
        idp.ca.cert_pem.write_to_path(str(ca))
        config = load_serve_config(_write(tmp_path, _TLS_REGISTRY + _provider_table(idp.jwks_url)))
        config = with_ca_file(config, ca, setting="--cacert")
        async with open_registry(config) as reg:
            await reg.register(config.providers[0])
            await reg.refresh("acme", "local")
            assert reg.status("acme", "local").key_ids == tuple(idp.kids)


@pytest.mark.usefixtures("no_env_trust")
def test_an_unusable_ca_file_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[registry]\nca_file = "absent.pem"\n')
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"jwks-cache: error: {path}: [registry] ca_file: cannot read CA file ")
    assert str(tmp_path / "absent.pem") in err
    assert main(["serve", "--config", str(_write(tmp_path, "")), "--cacert", str(tmp_path / "gone.pem")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jwks-cache: error: --cacert: cannot read CA file ") and "gone.pem" in err


# -- the control plane's reads ---------------------------------------------------------------------


def test_serving_without_an_admin_token_needs_reads_opened_explicitly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, LOOPBACK_REGISTRY)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"jwks-cache: error: {path}: [control_plane] protect_reads: ")
    assert "--admin-token-env" in err and "protect_reads = false" in err


def test_the_control_plane_table_sets_protect_reads(tmp_path: Path) -> None:
    assert load_serve_config(_write(tmp_path, "")).control_plane.protect_reads is True
    assert load_serve_config(_write(tmp_path, OPEN_READS)).control_plane.protect_reads is False
