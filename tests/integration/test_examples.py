"""Every example runs to completion and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("trio_service.py", ["200 hello alice", "401 (expired)"]),
        ("asyncio_service.py", ["200 hello alice", "401 (bad_signature)"]),
    ],
)
def test_example_runs(script: str, expected: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for line in expected:
        assert line in done.stdout
