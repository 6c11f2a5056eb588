"""The framework examples (Litestar, Quart, the control plane) run to completion and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


#: Both apps mount the control plane under /admin/jwks; these prove the sub-path reaches its routes.
MOUNTED = ["GET /admin/jwks/status: 200", "GET /admin/jwks/tenants/acme/providers/local/jwks: 200"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "litestar_app.py",
            ["200 hello alice", "401 invalid token (expired)", "401 a bearer token is required", *MOUNTED],
        ),
        (
            "quart_app.py",
            ["200 hello alice", "401 invalid token (bad_signature)", "401 a bearer token is required", *MOUNTED],
        ),
        (
            "control_plane.py",
            [
                "PUT without token: 401",
                "PUT with token: 201",
                "GET status without token: 401",
                "GET jwks: 200 kids key-1, key-2",
                "GET healthz: 200 pass",
                "GET status: ready refreshes 1",
            ],
        ),
    ],
)
def test_framework_example_runs(script: str, expected: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line in expected:
        assert line in lines, done.stdout
