"""The ``jwks-cache`` command: exit codes, one-line errors, and inspect/verify against a loopback IdP.

``main()`` calls ``anyio.run`` itself, so async tests run it in a worker thread while the test's own
event loop serves the LocalIdentityProvider.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest

from jwks_cache._cli import _demo
from jwks_cache._cli._main import InspectReport, main
from jwks_cache._cli._text import format_table
from jwks_cache.testing import LocalIdentityProvider

LOOPBACK = ["--allow-http", "--allow-private-networks"]


async def _run(*argv: str) -> int:
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(main, list(argv))


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jwks-cache: error: ")
    return lines[0]


# -- usage -----------------------------------------------------------------------------------------


def test_help_lists_every_command_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "inspect", "verify", "serve"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["inspect"],
        ["inspect", "https://a.example/jwks", "--issuer", "https://a.example"],
        ["verify", "tok"],
        ["--backend", "curio", "demo"],
        ["inspect", "https://a.example/jwks", "--max-ttl", "soon"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_serve_without_a_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["inspect", "http://127.0.0.1:9/jwks"], "--allow-http"),
        (["inspect", "http://127.0.0.1:9/jwks", "--allow-http"], "--allow-private-networks"),
        (["verify", "a.b.c", "--jwks-url", "http://127.0.0.1:9/jwks", "--allow-http"], "--allow-private-networks"),
    ],
)
def test_a_refused_url_names_the_flag_that_allows_it(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert hint in _one_error_line(capsys)


def test_format_table_aligns_text_left_and_numbers_right() -> None:
    lines = format_table(["name", "n"], [["a", "1"], ["long name", "1,000"]], right=frozenset({1}))
    assert lines == ["name           n", "a              1", "long name  1,000"]


# -- demo ------------------------------------------------------------------------------------------

DEMO_LINES = (
    "1 upstream request (idp.request_count)",
    "304 Not Modified",
    "+1 upstream request",
    "STALE: get_key(",
    "FAILED: get_key() raises FetchError",
    "allow_private_networks=True, require_https=False",
    "failed refreshes so far (status.refresh_errors)",
    "refresh_failed",
    "initech is registered in both, so it has a row in each",
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quick_demo_in_process_shows_every_step(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", backend, "demo", "--quick"]) == 0
    captured = capsys.readouterr()
    for line in DEMO_LINES:
        assert line in captured.out
    assert "skipped (--quick)" in captured.out
    assert captured.err == ""


def _demo_row(out: str, start: str) -> list[str]:
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(start)]
    assert len(rows) == 1, out
    return rows[0]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_explains_its_numbers(
    backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_demo, "_TIMING_BATCHES", 2)  # the wording is under test here, not the speed
    monkeypatch.setattr(_demo, "_TIMING_CALLS", 50)
    assert main(["--backend", backend, "demo"]) == 0
    out = capsys.readouterr().out
    # warm lookups: against the README's floor (an awaited dict read), timed as benchmarks/lookup.py does
    assert "the least any awaited key lookup costs" in out
    assert "benchmarks/lookup.py" in out
    floor = float(re.search(r"floor: await of a dict read +([\d,]+) +1\.0x", out)[1].replace(",", ""))  # type: ignore[index]
    nowait = _demo_row(out, "reg.get_key_nowait()")
    # the ratio printed (to 0.1) is the one of the times printed (to 1 ns, from unrounded ones)
    assert nowait[-1].endswith("x")
    assert abs(float(nowait[-1][:-1]) - float(nowait[-2].replace(",", "")) / floor) <= 0.05 + 1 / floor
    # the outage: its two counts of failed refreshes are the status counter, and the table's column is it too
    so_far = int(re.search(r"(\d+) failed refresh(es)? so far \(status\.refresh_errors\)", out)[1])  # type: ignore[index]
    logged = int(re.search(r"(\d+) refresh_failed", out)[1])  # type: ignore[index]
    in_all = int(re.search(r"(\d+) failed refresh(es)? in all \(status\.refresh_errors\)", out)[1])  # type: ignore[index]
    assert 0 < so_far == logged <= in_all
    assert "failed" in _demo_row(out, "registry  tenant")
    assert _demo_row(out, "outage    initech")[-1] == str(in_all)
    assert len(re.findall(r"^   reg +initech ", out, re.MULTILINE)) == 1  # one row per registry


def test_demo_runs_as_a_module_in_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jwks_cache", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in DEMO_LINES:
        assert line in done.stdout
    assert "\x1b[" not in done.stdout  # not a terminal: no colour codes
    assert done.stderr == ""


# -- inspect ---------------------------------------------------------------------------------------


def _mixed_jwks(idp: LocalIdentityProvider) -> bytes:
    good = list(idp.jwks["keys"])
    encryption = {**good[1], "kid": "enc-1", "use": "enc"}
    symmetric = {"kty": "oct", "kid": "shared-secret", "k": "c2VjcmV0c2VjcmV0", "alg": "HS256"}
    return json.dumps({"keys": [good[0], symmetric, encryption]}).encode()


async def test_inspect_shows_served_and_skipped_keys_with_reasons(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LocalIdentityProvider(keys=2) as idp:
        idp.set_body(_mixed_jwks(idp))
        assert await _run("--backend", anyio_backend_name, "inspect", idp.jwks_url, *LOOPBACK) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and len(line.split()) > 1}
    assert "served" in rows["key-1"] and "2048 bits" in rows["key-1"] and "RS256" in rows["key-1"]
    assert "skipped:" in rows["shared-secret"] and "oct" in rows["shared-secret"]
    assert "skipped:" in rows["enc-1"] and " enc " in rows["enc-1"]
    assert "keys: 1 served, 2 skipped" in out
    assert "300 s" in out and "ETag" in out


async def test_inspect_json_via_discovery(anyio_backend_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with LocalIdentityProvider(keys=2, alg="ES256") as idp:
        idp.cache_control = "max-age=999999"
        argv = ["--backend", anyio_backend_name, "inspect", "--issuer", idp.issuer, "--json", "--max-ttl", "3600"]
        assert await _run(*argv, *LOOPBACK) == 0
        kids = idp.kids
    report = msgspec.json.decode(capsys.readouterr().out, type=InspectReport)
    assert report.jwks_url.endswith("/jwks") and report.issuer is not None
    assert [(k.kid, k.kty, k.size, k.served) for k in report.keys] == [(kid, "EC", "P-256", True) for kid in kids]
    assert report.ttl == 3600.0  # clamped by --max-ttl
    assert report.etag is not None and report.last_modified is not None


async def test_inspect_fetch_failure_is_one_line_and_exit_1(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LocalIdentityProvider() as idp:
        idp.fail(404)
        assert await _run("--backend", anyio_backend_name, "inspect", idp.jwks_url, *LOOPBACK) == 1
    assert "404" in _one_error_line(capsys)


# -- verify ----------------------------------------------------------------------------------------


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "aud": "api", "iat": now, "exp": now + 300, **extra}


async def test_verify_prints_the_claims_as_json(anyio_backend_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with LocalIdentityProvider() as idp:
        claims = _claims()
        token = idp.mint(claims)
        argv = ["--backend", anyio_backend_name, "verify", token, "--issuer", idp.issuer, "--audience", "api"]
        assert await _run(*argv, *LOOPBACK) == 0
        assert json.loads(capsys.readouterr().out) == {"iss": idp.issuer, **claims}


async def test_verify_reads_the_token_from_stdin(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalIdentityProvider() as idp:
        monkeypatch.setattr(sys, "stdin", io.StringIO(idp.mint(_claims()) + "\n"))
        argv = ["--backend", anyio_backend_name, "verify", "-", "--jwks-url", idp.jwks_url, "--audience", "api"]
        assert await _run(*argv, *LOOPBACK) == 0
        assert json.loads(capsys.readouterr().out)["sub"] == "alice"


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        (lambda idp: idp.mint(_claims(exp=int(time.time()) - 3600)), "expired"),
        (lambda idp: idp.mint(_claims(iss="https://evil.example")), "issuer_mismatch"),
        (lambda idp: idp.mint(_claims(aud="other")), "audience_mismatch"),
        (lambda idp: idp.mint(_claims())[:-6] + "AAAAAA", "bad_signature"),
        (lambda idp: idp.mint(_claims(), headers={"kid": "ghost"}), "unknown_kid"),
        (lambda idp: "not-a-token", "malformed"),
    ],
)
async def test_verify_failure_is_one_line_with_its_reason_and_exit_1(
    mint: Any, reason: str, anyio_backend_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LocalIdentityProvider() as idp:
        argv = ["--backend", anyio_backend_name, "verify", mint(idp), "--issuer", idp.issuer, "--audience", "api"]
        assert await _run(*argv, *LOOPBACK) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"jwks-cache: error: {reason}: ")
    assert "alice" not in line  # no claims in errors
    assert capsys.readouterr().out == ""


# -- TLS trust -------------------------------------------------------------------------------------

PRIVATE_ONLY = ["--allow-private-networks"]  # https, but on 127.0.0.1


@pytest.fixture
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests decide the trust: a CI machine's own SSL_CERT_FILE must not."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.mark.usefixtures("no_env_trust")
async def test_inspect_trusts_a_private_ca_given_with_cacert(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with LocalIdentityProvider(tls=True) as idp:
        ca = tmp_path / "ca.pem"
        idp.ca.cert_pem.write_to_path(str(ca))
        argv = ["--backend", anyio_backend_name, "inspect", idp.jwks_url, *PRIVATE_ONLY]
        assert await _run(*argv) == 1  # certifi does not know the IdP's CA
        assert "CERTIFICATE_VERIFY_FAILED" in _one_error_line(capsys)
        assert await _run(*argv, "--cacert", str(ca)) == 0
        assert "keys: 2 served, 0 skipped" in capsys.readouterr().out
        assert idp.request_count == 1


@pytest.mark.usefixtures("no_env_trust")
async def test_verify_trusts_a_private_ca_given_with_cacert(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with LocalIdentityProvider(tls=True) as idp:
        ca = tmp_path / "ca.pem"
        idp.ca.cert_pem.write_to_path(str(ca))
        argv = ["--backend", anyio_backend_name, "verify", idp.mint(_claims()), "--issuer", idp.issuer]
        assert await _run(*argv, "--audience", "api", "--cacert", str(ca), *PRIVATE_ONLY) == 0
        assert json.loads(capsys.readouterr().out)["sub"] == "alice"


@pytest.mark.usefixtures("no_env_trust")
async def test_ssl_cert_file_in_the_environment_is_trusted(
    anyio_backend_name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalIdentityProvider(tls=True) as idp:
        ca = tmp_path / "ca.pem"
        idp.ca.cert_pem.write_to_path(str(ca))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        assert await _run("--backend", anyio_backend_name, "inspect", idp.jwks_url, *PRIVATE_ONLY) == 0
        assert "keys: 2 served" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read CA file"), (b"not a certificate\n", "not a PEM file of CA certificates")],
    ids=["missing", "not-pem"],
)
@pytest.mark.usefixtures("no_env_trust")
@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_an_unusable_cacert_is_one_line_naming_the_file_and_exit_2(
    command: str, content: bytes | None, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    target = ["https://127.0.0.1:9/jwks"] if command == "inspect" else ["a.b.c", "--jwks-url", "https://127.0.0.1:9/j"]
    assert main([command, *target, *PRIVATE_ONLY, "--cacert", str(ca)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("jwks-cache: error: --cacert: ") and str(ca) in line and problem in line


def test_an_unusable_ssl_cert_file_is_one_line_naming_the_variable_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "absent.pem"))
    assert main(["inspect", "https://127.0.0.1:9/jwks", *PRIVATE_ONLY]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("jwks-cache: error: SSL_CERT_FILE: ") and "absent.pem" in line
