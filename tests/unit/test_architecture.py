"""The package's import graph is its architecture diagram: floors point down, no circle anywhere.

Walks every module's imports with ``ast`` (``TYPE_CHECKING`` blocks and function-level imports
included, since a circle hidden behind either is still a circle a reader must untangle) and checks
them against the floors documented in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator
from typing import Final

import jwks_cache

PACKAGE: Final = pathlib.Path(jwks_cache.__file__).parent
NAME: Final = "jwks_cache"

#: floor of each room, lowest first; a module may import only from its own floor or lower ones
FLOORS: Final = (
    ("data", ("_errors", "_issuers", "_config", "_models", "_version")),
    ("rules", ("_jose",)),
    ("adapters", ("_clock", "_telemetry")),
    ("http", ("_http",)),
    ("stores", ("_stores",)),
    ("runtime", ("_runtime",)),
    ("faces", ("", "redis")),
    ("edges", ("_asgi", "asgi", "_cli", "__main__", "testing")),
    ("integrations", ("config_file", "bearer", "sync", "quart", "litestar", "starlette", "fastapi")),
)
#: edges and integrations use the runtime through public names only
EDGES: Final = (
    "_asgi",
    "asgi",
    "_cli",
    "__main__",
    "testing",
    "config_file",
    "bearer",
    "sync",
    "quart",
    "litestar",
    "starlette",
    "fastapi",
)


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES: Final = _modules()


def _imports(module: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(imported module, names taken from it) for every import of ``module``, inside the package."""
    path = MODULES[module]
    here = module.split(".") if module else []
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(NAME + ".") or alias.name == NAME:
                    yield alias.name.removeprefix(NAME).lstrip("."), ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == NAME or node.module.startswith(NAME + ".")):
                target = node.module.removeprefix(NAME).lstrip(".")
            else:
                continue
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{target}.{n}".lstrip(".") for n in names if f"{target}.{n}".lstrip(".") in MODULES]
            if submodules:  # `from . import _codec` imports the submodule, not a name of the package
                for sub in submodules:
                    yield sub, ()
            else:
                yield target, names


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}


def _floor(module: str) -> int:
    room = module.split(".")[0]
    for index, (_, rooms) in enumerate(FLOORS):
        if room in rooms:
            return index
    raise AssertionError(f"jwks_cache.{module} is in no floor of FLOORS: give it a room")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_room() -> None:
    for module in MODULES:
        _floor(module)


def test_no_import_circle_even_behind_type_checking() -> None:
    assert _cycles(_graph()) == []


def test_imports_point_down_the_floors() -> None:
    upward = [
        f"{m or NAME} ({FLOORS[_floor(m)][0]}) imports {t} ({FLOORS[_floor(t)][0]})"
        for m, targets in _graph().items()
        for t in targets
        if _floor(t) > _floor(m)
    ]
    assert upward == []


def test_the_runtime_never_imports_an_edge() -> None:
    edges = {m for m in MODULES if m.split(".")[0] in EDGES}
    reached = {t for m, targets in _graph().items() if not m.startswith(EDGES) for t in targets}
    assert reached & edges == set()


def _runtime_privates() -> set[str]:
    """Private attribute names the runtime's classes keep (``self._x = ...`` and ``__slots__``)."""
    names: set[str] = set()
    for module, path in MODULES.items():
        if not module.startswith("_runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                continue
            if node.value.id == "self" and node.attr.startswith("_") and not node.attr.startswith("__"):
                names.add(node.attr)
    return names


def _private_reads(path: pathlib.Path, privates: set[str]) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        own = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        if isinstance(node, ast.Attribute) and node.attr in privates and not own:
            yield f"{path.name}:{node.lineno} .{node.attr}"


def test_edges_import_only_public_names_from_the_runtime() -> None:
    public = set(jwks_cache.__all__)
    reaching = [
        f"{m} imports {name} from {target}"
        for m in MODULES
        if m.split(".")[0] in EDGES
        for target, names in _imports(m)
        if target.startswith("_runtime")
        for name in names
        if name not in public
    ]
    assert reaching == []


def test_no_edge_reads_a_private_attribute_of_the_runtime() -> None:
    privates = _runtime_privates()
    reads = [r for m, path in MODULES.items() if m.split(".")[0] in EDGES for r in _private_reads(path, privates)]
    assert reads == []


#: (test file, attribute) reads the walker cannot tell from a runtime private by name alone:
#: test_jose's ``cache._tables`` is TableCache's own (a pure module's, under its unit test), only
#: named like the Registry's and the Refresher's ``_tables``
PURE_NAMESAKES: Final = frozenset({("test_jose.py", "_tables")})


def test_tests_read_no_private_attribute_of_the_runtime() -> None:
    """What a test checks of the runtime it reads through public views (``Registry.runtime_stats()``)."""
    privates = _runtime_privates()
    tests = pathlib.Path(__file__).parents[1]
    reads = [
        r
        for path in sorted(tests.rglob("*.py"))
        if path.name != "test_architecture.py"
        for r in _private_reads(path, privates - {name for file, name in PURE_NAMESAKES if file == path.name})
    ]
    assert reads == []
