"""The structure of the code, read from the source with ``ast`` (nothing is imported or executed).

The import graph of ``harness/`` and ``algorithms/`` has two kinds of edge:

* **module-level** imports (in a module's body, class bodies and module-level ``if``/``try`` blocks
  included; ``if TYPE_CHECKING:`` blocks excluded): they run when the module is imported, so they
  must form no circle;
* **function-level** (lazy) imports, inside a ``def``: they run when the function is called. They
  are allowed, but one that closes a circle with the rest of the graph must be listed in
  ``DOCUMENTED_LAZY`` with the reason it is there.

Imports done with ``importlib.import_module`` (the registry loading a plugin it was asked for) are
not edges here: they name no module in the source.

Forbidden directions, whatever the kind of edge: an algorithm importing the sweep, report or CLI
code; the core (``harness`` modules other than the CLI, the sweep and the report modules) importing
Ray or the CLI; the report modules importing algorithms or the sweep; and, at module level, the
registry importing the algorithm contract, datasets or networks. The modules ``creditbench list``
runs must not import torch at module level, directly or through other modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "algorithms")

# (importer, imported): why a lazy import closes a circle
DOCUMENTED_LAZY = {
    ("harness.registry", "harness.algorithm"):
        "register_algorithm validates a class with the contract's check; the contract's spec() asks the "
        "registry where a class comes from (algorithm_origin)",
    ("harness.registry", "harness.datasets"):
        "registry.DATASETS is the table harness.datasets owns, imported on first access",
    ("harness.registry", "harness.network_presets"):
        "registry.NETWORKS is the table harness.network_presets owns, imported on first access",
}
# known broken rules awaiting a fix; each must still be broken (test below), so an entry goes when its
# fix lands (the last two, sweep → cli and spec → ray, went with the planning/execution split)
PENDING: dict[str, str] = {}  # violation -> the change that will fix it (empty: none known)
# modules `creditbench list` imports (no torch at module level, directly or through others)
TORCH_FREE = ("harness.cli", "harness.registry", "harness.names", "harness.errors", "harness.hparams",
              "harness.datasets", "harness.network_presets", "harness.scaffold", "algorithms")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, module_level) for every import in ``path``. ``from harness import store``
    is an edge to ``harness.store`` when that is a module; external modules keep their top name."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def target(mod: str) -> str:
        return mod if mod in known or mod.split(".")[0] in PACKAGES else mod.split(".")[0]

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.Import):
            out.extend((target(a.name), module_level) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            out.extend((s, module_level) for s in subs)
            if len(subs) < len(node.names):
                out.append((target(base), module_level))
        for child in ast.iter_child_nodes(node):
            visit(child, module_level)

    visit(tree, True)
    return [(m, lvl) for m, lvl in out if m != name]


def import_graph(root: Path = ROOT) -> dict[str, dict[str, bool]]:
    """module → {imported module: True if any import of it is module-level}."""
    mods = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).glob("*.py"))}
    known = set(mods)
    graph: dict[str, dict[str, bool]] = {}
    for name, path in mods.items():
        edges: dict[str, bool] = {}
        for mod, module_level in imports_of(path, name, known):
            edges[mod] = edges.get(mod, False) or module_level
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle in ``graph`` (as a list of modules, first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def internal(graph, *, module_level_only: bool, skip: set = frozenset()) -> dict[str, set[str]]:
    return {m: {t for t, lvl in edges.items() if t in graph and (lvl or not module_level_only) and (m, t) not in skip}
            for m, edges in graph.items()}


def violations(graph: dict[str, dict[str, bool]]) -> list[str]:
    """Every broken rule, one line each (empty when the structure is sound)."""
    out = []
    cycle = find_cycle(internal(graph, module_level_only=True))
    if cycle:
        out.append("module-level import circle: " + " → ".join(cycle))
    cycle = find_cycle(internal(graph, module_level_only=False, skip=set(DOCUMENTED_LAZY)))
    if cycle:
        out.append("import circle through an undocumented function-level import: " + " → ".join(cycle))

    def is_report(m):
        return m == "harness.report" or m.startswith("harness.report_")

    outer = {"harness.cli", "harness.sweep"}
    for mod, edges in sorted(graph.items()):
        for dep, module_level in sorted(edges.items()):
            if mod.startswith("algorithms.") and (dep in outer or is_report(dep)):
                out.append(f"{mod} (an algorithm) imports {dep} (sweep/report/CLI code)")
            if mod.startswith("harness.") and mod not in outer and not is_report(mod) and dep in ("ray", "harness.cli"):
                out.append(f"{mod} (core) imports {dep}")
            if is_report(mod) and (dep.startswith("algorithms") or dep == "harness.sweep"):
                out.append(f"{mod} (report) imports {dep}")
            if mod == "harness.registry" and module_level and \
                    dep in ("harness.algorithm", "harness.datasets", "harness.networks", "harness.network_presets"):
                out.append(f"harness.registry imports {dep} at module level (the registry is a leaf)")
    module_level = internal(graph, module_level_only=True)
    for mod in TORCH_FREE:
        seen, todo = set(), [mod]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            if graph.get(m, {}).get("torch"):
                out.append(f"{mod} imports torch at module level" + (f" (through {m})" if m != mod else ""))
                break
            todo.extend(module_level.get(m, ()))
    return out


def test_the_import_graph_is_read():
    graph = import_graph()
    assert graph["algorithms.rfl"]["harness.registry"] is True  # module-level
    assert graph["harness.registry"]["harness.algorithm"] is False  # function-level (register_algorithm)
    assert graph["harness.store"]["harness.names"] is True
    assert "torch" in graph["harness.networks"] and "ray" in graph["harness.sweep"]


def test_no_import_circle_and_no_forbidden_direction():
    assert [v for v in violations(import_graph()) if v not in PENDING] == []


def test_pending_violations_are_still_there():
    """When one is fixed, remove it from PENDING (so that it stays fixed)."""
    found = violations(import_graph())
    assert [v for v in PENDING if v not in found] == []


def test_every_documented_lazy_import_exists_and_is_function_level():
    graph = import_graph()
    for importer, imported in DOCUMENTED_LAZY:
        assert graph[importer].get(imported) is False, (importer, imported)


def _copy_tree(tmp_path: Path) -> Path:
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("module,line,needle", [
    ("harness/errors.py", "from harness.registry import Registry", "module-level import circle"),
    ("harness/provenance.py", "def later():\n    from harness.train import Trainer\n",
     "undocumented function-level import"),
    ("algorithms/fa.py", "from harness.sweep import resolve", "(an algorithm) imports harness.sweep"),
    ("harness/train.py", "def later():\n    import ray\n", "harness.train (core) imports ray"),
    ("harness/cost.py", "from harness.cli import main", "harness.cost (core) imports harness.cli"),
    ("harness/report_tables.py", "import algorithms.rfl", "(report) imports algorithms.rfl"),
    ("harness/report.py", "from harness import sweep", "(report) imports harness.sweep"),
    ("harness/registry.py", "import harness.datasets", "harness.registry imports harness.datasets at module level"),
    ("harness/hparams.py", "import torch", "harness.hparams imports torch at module level"),
    ("harness/names.py", "from harness import store", "imports torch at module level (through harness.store)"),
])
def test_each_rule_fails_when_broken(tmp_path, module, line, needle):
    """Break the structure on purpose in a copy of the source: the check names what broke."""
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    found = violations(import_graph(root))
    assert any(needle in v for v in found), found
