"""Architecture rules of issue 12, checked on the source of ``hpsearch/`` with ``ast``.

- No import cycle among module-level imports (an import under ``if TYPE_CHECKING:`` or
  inside a function runs later, or never, so it cannot make a cycle at import time).
- No module imports another module's ``_private`` name: shared helpers get a public name
  in the package that owns them. Importing a private *module* (``from hpsearch.study
  import _manager``, ``from hpsearch.study._manager import StudyManager``) is fine.
- No class over 250 lines (``MirroredStorage`` implements Optuna's wide storage interface
  and is exempt) and no function or method over 40 lines. Lines are counted from the
  ``def``/``class`` line to the last line of the body, as /tmp/restructure/sizes.py does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpsearch"
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 40
CLASS_EXEMPT = frozenset({"MirroredStorage"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES: dict[str, ast.Module] = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name an ``ImportFrom`` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]  # a plain module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, not under TYPE_CHECKING.

    Class bodies, ``if``/``try``/``with`` blocks run at import time, so their imports count.
    """
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _module_level_imports(stmt.body)
            yield from _module_level_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, *(h.body for h in stmt.handlers), stmt.orelse, stmt.finalbody):
                yield from _module_level_imports(block)
        elif isinstance(stmt, (ast.With, ast.ClassDef)):
            yield from _module_level_imports(stmt.body)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The hpsearch modules whose code runs because of this import, seen from ``module``.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first; those of the
    importer's own packages are already being imported, so they add no edge.
    """
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        source = _resolve(module, node)
        named = {f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names}
    mine = {*_ancestors(module), module}
    targets: set[str] = set()
    for name in named:
        while name and name not in MODULES:  # `import hpsearch.x.attr` style: the longest module prefix
            name = name.rpartition(".")[0]
        if not name:
            continue
        targets.add(name)
        targets.update(a for a in _ancestors(name) if a not in mine)
    targets.discard(module)
    return targets


def import_graph() -> dict[str, set[str]]:
    """module -> the hpsearch modules its import runs (module-level imports only)."""
    return {
        module: {t for node in _module_level_imports(tree.body) for t in _targets(module, node)}
        for module, tree in TREES.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        cycles.append(_cycle_through(start, members, graph))
    return cycles


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # not reached: start is in a cycle


def test_the_cycle_finder_finds_a_cycle_and_ignores_a_chain() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_only_imports_run_at_import_time_count() -> None:
    tree = ast.parse(
        "import a\n"
        "if TYPE_CHECKING:\n    import b\n"
        "def f():\n    import c\n"
        "class K:\n    import d\n"
        "try:\n    import e\nexcept ImportError:\n    import g\n"
    )
    names = [alias.name for node in _module_level_imports(tree.body) for alias in node.names]
    assert names == ["a", "d", "e", "g"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) == len(MODULES) and any(graph.values())  # the walk saw the package's imports
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among module-level imports:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles
    )


@dataclass(frozen=True)
class PrivateImport:
    importer: str
    line: int
    source: str
    name: str

    def __str__(self) -> str:
        return f"{_where(self.importer, self.line)}: from {self.source} import {self.name}"


def private_imports() -> list[PrivateImport]:
    """Every ``from hpsearch.<m> import _name`` (anywhere, lazy imports included) where
    ``_name`` is not a module and ``<m>`` is not the importing module itself."""
    found = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(module, node)
            if source.split(".")[0] != "hpsearch" or source == module:
                continue
            for alias in node.names:
                name = alias.name
                private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
                if private and f"{source}.{name}" not in MODULES:
                    found.append(PrivateImport(module, node.lineno, source, name))
    return found


PRIVATE_IMPORTS = private_imports()


@pytest.mark.parametrize("violation", PRIVATE_IMPORTS or [None], ids=[str(v) for v in PRIVATE_IMPORTS] or ["none"])
def test_no_module_imports_another_modules_private_name(violation: PrivateImport | None) -> None:
    assert len(MODULES) > 20  # the scan read the package
    assert violation is None, (
        f"{violation} reaches into another module's private name: give it a public name in the package that owns it"
    )


@dataclass(frozen=True)
class Oversized:
    kind: str
    module: str
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{_where(self.module, self.line)} {self.kind} {self.name} ({self.lines} lines)"


def oversized() -> list[Oversized]:
    """Classes over 250 lines (MirroredStorage exempt) and functions over 40, nested ones too."""
    found = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.ClassDef):
                if lines > MAX_CLASS_LINES and node.name not in CLASS_EXEMPT:
                    found.append(Oversized("class", module, node.lineno, node.name, lines))
            elif lines > MAX_FUNCTION_LINES:
                found.append(Oversized("function", module, node.lineno, node.name, lines))
    return found


OVERSIZED = oversized()


@pytest.mark.parametrize("offender", OVERSIZED or [None], ids=[str(o) for o in OVERSIZED] or ["none"])
def test_no_oversized_class_or_function(offender: Oversized | None) -> None:
    assert len(MODULES) > 20  # the scan read the package
    limit = MAX_CLASS_LINES if offender is not None and offender.kind == "class" else MAX_FUNCTION_LINES
    assert offender is None, f"{offender}: over {limit} lines; split it"
