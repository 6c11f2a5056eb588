"""The pytest example of docs/testing.md runs as written, and passes every time.

The example is the page's own text, extracted here: run by pytest in a child process it gets its
fixtures from the installed plugin exactly as a user's suite does. A virtual-clock example that
fails one run in fifteen is a broken example, so the repetition test runs its tests again and again
on both event loops: ``JWKS_CACHE_DOCS_RUNS`` times (20 by default; 200 before a release).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import anyio
import pytest

from jwks_cache.testing import LocalIdentityProvider, VirtualClock

DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
#: runs per example in the suite; ``JWKS_CACHE_DOCS_RUNS=200`` sets every count (the release check)
_RUNS = {
    "test_rotated_key_is_picked_up": 3,
    "test_expired_token_is_refused": 3,
    "test_outage_is_absorbed_then_fails_closed": 20,
}


def _example_source() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOCS.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    examples = [block for block in blocks if "pytestmark" in block]
    assert len(examples) == 1, "docs/testing.md should hold exactly one pytest example"
    return examples[0]


def _example_module() -> types.ModuleType:
    module = types.ModuleType("docs_testing_example")
    exec(compile(_example_source(), str(DOCS), "exec"), module.__dict__)
    return module


def test_the_example_passes_under_pytest_with_the_plugins_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_docs_example.py").write_text(_example_source(), encoding="utf-8")
    # only the two plugins a user's suite needs (anyio's, and ours by its entry-point name): the
    # others installed here (schemathesis, hypothesis) would triple the child's start-up
    plugins = ["-p", "no:cacheprovider", "-p", "anyio", "-p", "jwks_cache"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "-W", "error", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout  # three tests on asyncio and trio


@pytest.mark.parametrize("name", list(_RUNS))
async def test_each_example_passes_run_after_run(name: str) -> None:
    example = getattr(_example_module(), name)
    runs = int(os.environ.get("JWKS_CACHE_DOCS_RUNS", _RUNS[name]))
    for _ in range(runs):
        async with LocalIdentityProvider() as idp:  # as fresh as the fixture's
            with anyio.fail_after(10):
                if "virtual_clock" in inspect.signature(example).parameters:
                    await example(idp, VirtualClock())
                else:
                    await example(idp)
