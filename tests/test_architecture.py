"""The layers of the code (docs/architecture.md): imports point down only and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "netinvert"
LAYERS = [  # bottom to top; packages on one line share a layer
    ("ground",),
    ("models", "data"),
    ("targets", "domains"),
    ("solvers",),
    ("methods",),
    ("report",),
    ("tasks",),
    ("sweeps",),
    ("cli", "__main__", "demo"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports() -> dict[str, set[str]]:
    """Every netinvert module and the netinvert modules it imports at run time (at module level or inside
    functions; imports under ``if TYPE_CHECKING:`` only serve annotations)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netinvert"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("netinvert"))
        graph[name] = found
    known = set(graph)
    return {name: {m for m in found if m in known and m != name} for name, found in graph.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(RANK), sorted((packages | modules) - set(RANK))


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for module, imported in _imports().items():
        here = _layer(module)
        if here is None:  # netinvert/__init__.py: the public API gathers from every layer below the CLI
            assert all((_layer(m) or 0) < RANK["report"] for m in imported), sorted(imported)
            continue
        upward += [f"{module} -> {m}" for m in imported if (_layer(m) or 0) > here]
    assert upward == []


def test_no_import_cycle():
    graph = _imports()
    packages = {m for m in graph if (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").exists()}
    edges = {m: {t for t in targets if t not in packages} for m, targets in graph.items() if m not in packages}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("limit", [650])
def test_no_file_is_too_long_to_read(limit):
    allowed = {"solvers/search/bab.py", "models/onnx/ops.py"}
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > limit and str(p.relative_to(PACKAGE)) not in allowed]
    assert long == []


def test_only_models_onnx_parses_onnx():
    """One module parses ONNX (issue 26): only ``netinvert.models.onnx`` imports the onnx package; the exact
    solvers read the nodes it parsed, built by its op table."""
    readers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "onnx" or n.startswith("onnx.") for n in names):
                readers.add(_module_name(path))
    assert readers and all(r.startswith("netinvert.models.onnx") for r in readers), sorted(readers)
