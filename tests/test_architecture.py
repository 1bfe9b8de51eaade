"""The shape of the code, checked: the import graph (leaf modules import nothing above
them, no cycles), config checks free of TensorFlow, short functions, one error module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_python

PACKAGE = ROOT / "segkit"
# Leaf packages and modules, and the only segkit modules each may import.
LEAVES = {
    "segkit.models": ("segkit.errors", "segkit.registry", "segkit.models"),
    "segkit.losses": ("segkit.errors", "segkit.registry", "segkit.losses"),
    "segkit.metrics": (),
    "segkit.data": ("segkit.errors", "segkit.registry", "segkit.fileio", "segkit.data"),
    "segkit.errors": (),
    "segkit.registry": ("segkit.errors",),
    "segkit.tags": (),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _segkit_imports(path: Path) -> set[str]:
    """Every segkit module ``path`` imports, at the top or inside functions, except under
    ``if TYPE_CHECKING:`` (types only, never executed)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "segkit"}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in _segkit_imports(path) if i in modules and i != name}
            for name, path in modules.items()}


def test_leaf_modules_import_nothing_above_them():
    for module, imports in _graph().items():
        leaf = next((k for k in LEAVES if module == k or module.startswith(k + ".")), None)
        if leaf is None:
            continue
        allowed = LEAVES[leaf]
        above = sorted(i for i in imports
                       if not any(i == a or i.startswith(a + ".") for a in allowed))
        assert not above, f"{module} imports {above}"


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def _imported_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint(' '.join(sys.modules))"
    res = run_python(script, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return set(res.stdout.split())


def test_errors_models_losses_import_no_config_tracking_or_experiment():
    loaded = _imported_after("import segkit.errors, segkit.models, segkit.losses")
    assert not loaded & {"segkit.config", "segkit.tracking", "segkit.experiment",
                         "tensorflow", "keras"}


def test_validation_imports_no_tensorflow():
    loaded = _imported_after("import segkit.config, segkit.sweep")
    assert not loaded & {"tensorflow", "keras"}


def test_no_function_over_40_lines_without_a_reason():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 40 and "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long


def test_config_error_lives_in_errors_only():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        if path.name != "errors.py":
            assert "ConfigError" not in classes and "SegkitError" not in classes, path
