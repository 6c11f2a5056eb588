"""The framework examples (Litestar, FastAPI, Quart, the control plane) run to completion and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


#: The Litestar and Quart apps mount the control plane under /admin/jwks; these prove the sub-path reaches its routes.
MOUNTED = ["GET /admin/jwks/status: 200", "GET /admin/jwks/tenants/acme/providers/local/jwks: 200"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "litestar_app.py",
            [
                "200 hello alice",
                "401 invalid token (expired)",
                '  WWW-Authenticate: Bearer error="invalid_token", error_description="expired"',
                "401 a bearer token is required",
                "  WWW-Authenticate: Bearer",
                "403 token lacks the required scope(s) 'orders:read'",
                '  WWW-Authenticate: Bearer error="insufficient_scope", scope="orders:read"',
                *MOUNTED,
            ],
        ),
        (
            "fastapi_app.py",
            [
                "GET /whoami: 200 hello alice",
                "GET /whoami: 401 refused",
                "  WWW-Authenticate: Bearer",
                "GET /orders: 200 orders of alice",
                "GET /orders: 403 refused",
                '  WWW-Authenticate: Bearer error="insufficient_scope", scope="orders:read"',
                "GET /tenants/globex/whoami: 200 carol of globex",
                "GET /tenants/acme/whoami: 401 refused",
                '  WWW-Authenticate: Bearer error="invalid_token", error_description="bad_signature"',
                "OpenAPI security schemes: BearerToken",
            ],
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
