"""The layers of the code (docs/architecture.md): imports point down only and no two modules import each other."""

from __future__ import annotations

import ast
import inspect
import re
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


# --- one name per idea: the glossary in docs/architecture.md -----------------------------------------------------
ROOT = PACKAGE.parent
READ_BACK = "read back"  # a line marked so reads a name that earlier versions wrote (old result.json keys)


def _code_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _retired_in_code(path: Path) -> list[str]:
    """Uses of retired names in one module (see the glossary): ``starts`` anywhere in code; ``state`` as an attribute,
    keyword or key (a local ``state`` holding a state dict is PyTorch's word); ``kind``/``kinds`` defined or used
    as a key anywhere but for a result's kind; ``Stage`` as a class name."""
    lines = path.read_text().splitlines()
    found = []

    def flag(node: ast.AST, name: str) -> None:
        line = lines[node.lineno - 1] if hasattr(node, "lineno") else ""
        if READ_BACK not in line:
            found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}: {name}")

    result_kind_ok = path.name == "result.py" and path.parent.name == "ground"
    onnx_words = path.parent.name == "onnx"  # ONNX's own attribute names (Slice's starts), not ours
    tree = ast.parse(path.read_text())
    fields = {id(stmt.target) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for stmt in node.body
              if isinstance(stmt, ast.AnnAssign)}
    for node in ast.walk(tree):
        if onnx_words and (isinstance(node, ast.Name) and node.id == "starts"
                           or isinstance(node, ast.Constant) and node.value == "starts"):
            continue
        if isinstance(node, ast.Name) and node.id == "starts" or isinstance(node, ast.arg) and node.arg == "starts":
            flag(node, "starts")
        elif isinstance(node, ast.Attribute) and node.attr in ("starts", "state"):
            flag(node, node.attr)
        elif isinstance(node, ast.Constant) and node.value in ("starts", "state", "kinds"):
            flag(node, node.value)
        elif isinstance(node, ast.Constant) and node.value == "kind" and not result_kind_ok:
            flag(node, "kind")
        elif isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for kw in node.keywords:
                if kw.arg in ("starts", "state") or kw.arg == "kind" and callee not in ("Result", "cls", "replace"):
                    flag(kw.value, f"{kw.arg}=")
        elif isinstance(node, ast.ClassDef) and node.name == "Stage":
            flag(node, "class Stage")
        if isinstance(node, (ast.FunctionDef, ast.arg)) and getattr(node, "name", getattr(node, "arg", "")) in (
                "kind", "kinds"):
            flag(node, "kind defined")
        if (isinstance(node, ast.Name) and node.id in ("kind", "kinds") and isinstance(node.ctx, ast.Store)
                and id(node) not in fields):
            flag(node, "kind defined")
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
                if isinstance(target, ast.Name) and target.id == "kind" and not (
                        result_kind_ok and node.name == "Result"):
                    flag(stmt, f"{node.name}.kind")
    return found


def test_code_uses_no_retired_names():
    found = [hit for path in _code_files() for hit in _retired_in_code(path)]
    assert found == []


RETIRED_TEXT = {  # pattern: the name now
    r"(?i)\bjudge": "verifier",
    r"--starts\b|`starts`|\bstarts=": "restarts",
    r"`state`|\bstate=": "status",
    r"--kind\b": "--pattern",
}


def test_docs_and_code_text_use_no_retired_words():
    """The README, docs/ (but the glossary, which lists the retired names) and every module's text (comments and
    docstrings included) use the names of the glossary."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *_code_files()]
    found = []
    for path in texts:
        text = path.read_text()
        if path.name == "architecture.md":
            before, _, glossary = text.partition("\n## Glossary")
            text = before + ("\n## " + glossary.split("\n## ", 1)[1] if "\n## " in glossary else "")
        for n, line in enumerate(text.splitlines(), start=1):
            found += [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]} (say {now})"
                      for pattern, now in RETIRED_TEXT.items() if re.search(pattern, line) and READ_BACK not in line]
    assert found == []


def test_the_glossary_names_each_retired_word():
    glossary = (ROOT / "docs" / "architecture.md").read_text().split("## Glossary", 1)[1]
    for word in ("judge", "starts", "state", "Stage", "kind", "verifier_agrees", "verifier_agreement", "status",
                 "restarts", "phase", "layer_type", "unit", "pattern", "layout"):
        assert f"`{word}`" in glossary, word


# --- one ONNX reader ----------------------------------------------------------------------------------------------
PARSING = ("numpy_helper", "helper", "reference", "inliner", "shape_inference", "load", "load_model")


def _parses_onnx(path: Path) -> bool:
    """Whether a module imports ``onnx`` to read graphs: a graph-reading part of the package (``numpy_helper``,
    ``helper``, ``onnx.reference``, ...) or ``onnx.load``; ``onnx.TensorProto`` constants alone read no graph."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "onnx":
            if node.module != "onnx" or any(a.name in PARSING for a in node.names):
                return True
        if isinstance(node, ast.Import) and any(a.name.startswith("onnx.") and a.name != "onnx.TensorProto"
                                                for a in node.names):
            return True
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "onnx"
                and node.attr in PARSING):
            return True
    return False


def _onnx_parsers(skip: tuple[str, ...] = ()) -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if not str(p.relative_to(PACKAGE)).startswith(skip) and _parses_onnx(p))


def test_one_module_parses_onnx_graphs_outside_the_solvers():
    assert _onnx_parsers(skip=("solvers/",)) == ["models/onnx/graph.py"]


def test_one_module_parses_onnx_graphs():
    """One ONNX reader (issue 26.3): the exact solvers read the nodes ``models/onnx`` parsed, built by its op table."""
    assert _onnx_parsers() == ["models/onnx/graph.py"]


# --- no per-method option logic on the command line --------------------------------------------------------------
def _cli_trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted((PACKAGE / "cli").glob("*.py"))]


def test_cli_compares_no_method_name():
    """No ``if method == "gradient"`` (or ``in ("langevin", ...)``) in cli/: a command hands each method the flags it
    declares and the method's options check them."""
    from netinvert.methods import METHODS

    def names(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names(e) for e in node.elts)) if node.elts else set()
        return set()

    found = [f"{p.name}:{node.lineno}" for p, tree in _cli_trees() for node in ast.walk(tree)
             if isinstance(node, ast.Compare) and any(names(side) & set(METHODS)
                                                      for side in [node.left, *node.comparators])]
    assert found == []


def test_cli_passes_method_options_only_through_the_options_dataclass():
    """Every ``invert(...)`` in cli/ takes its options from the flags built from a method's ``Options``
    (``**options.for_method(...)``), and no command declares a flag of its own for an option of a method it runs."""
    from dataclasses import fields

    from netinvert.cli.main import app
    from netinvert.ground.options import spec_of
    from netinvert.methods import options_of

    loose = [f"{p.name}:{node.lineno}" for p, tree in _cli_trees() for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "invert"
             and any(kw.arg not in (None, "method", "simulator") for kw in node.keywords)]
    assert loose == []
    own = []
    for command in app.registered_commands:
        fn = command.callback
        methods = getattr(fn, "__methods__", ())
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
            methods = methods or getattr(fn, "__methods__", ())
        flags = {f.name for m in methods for f in fields(options_of(m)) if spec_of(f).cli}
        own += [f"{fn.__name__} --{name}" for name in inspect.signature(fn).parameters if name in flags]
    assert own == []
