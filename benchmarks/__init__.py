"""jwks-cache benchmarks: ``python -m benchmarks [--quick] [--json FILE] [--only CASE ...]``.

Every figure is compared in the same run with a floor (the least any implementation could do) and,
where one exists, a peer (PyJWT's PyJWKClient, joserfc), because absolute numbers from a shared
2-core machine mean little and ratios travel. Each target is marked PASS or MISS; SKIP means the
feature a case needs is not there, ERROR that the case itself failed.

Case modules are imported on demand, so ``python -m benchmarks.memory`` children start lean.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Case modules in run order; each has ``NAME`` and ``run(quick: bool) -> CaseResult``.
CASES = ("lookup", "verify", "sync", "stampede", "flood", "memory", "register", "restore", "fleet", "virtual_time")

__all__ = ["CASES", "load"]


def load(name: str) -> ModuleType:
    """The case module ``name`` (one of :data:`CASES`)."""
    return importlib.import_module(f"{__name__}.{name}")
