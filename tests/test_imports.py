"""The package's imports run one way: no module of src/bertwwm reaches itself again through its imports.

The imports are read with ast (nothing is executed). Two graphs are checked:

- module-level imports only: a cycle here fails at import time, or works only thanks to import order;
- every import, also those inside functions. Modules defer imports of heavy libraries and of their own
  verbs so that `bertwwm --help` and the light verbs start fast, and that is fine, but a deferred import is
  still a dependency: a cycle through one (zoo -> convert -> zoo, finetune -> report -> finetune) only waits
  for someone to move the import to the top. So deferring is for speed, never for hiding a cycle.

Left out: imports under `if TYPE_CHECKING:` (never run) and the CLI's table of verb modules, which cli.py
loads by name with importlib (it sits above every verb and no module imports it).
Importing `bertwwm.a.b` runs the package `bertwwm.a` first, so it counts as depending on both; a module of `bertwwm.a`
counts as depending on its own package only when it names it (`from bertwwm.a import b`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "bertwwm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported bertwwm module, line, at module level) for every import statement of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                full = f"{base}.{alias.name}"
                found.append((full if full in MODULES else base, node.lineno, top))
                if full in MODULES and base != PACKAGE:  # ... after running pkg/__init__, named here explicitly
                    found.append((base, node.lineno, top))
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return [(t, line, top) for t, line, top in found if t == PACKAGE or t.startswith(PACKAGE + ".")]


def import_graph(module_level_only: bool) -> dict[str, dict[str, int]]:
    """{module: {module it depends on: line of the first import}}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        deps: dict[str, int] = {}
        for target, line, top in _imports(name, path):
            if module_level_only and not top:
                continue
            while target not in MODULES:  # `import bertwwm.x.CONSTANT`-style names: their module
                target = target.rpartition(".")[0]
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the target and the packages it runs first
                dep = ".".join(parts[:i])
                # itself, or a package it sits in -- unless it names that package (`from pkg import sibling`
                # runs pkg/__init__, which may import this very module: a cycle the package hides)
                if dep == name or (name.startswith(dep + ".") and i < len(parts)):
                    continue
                deps.setdefault(dep, line)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as [a, b, ..., a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to itself (breadth first)
        members, start = set(group), min(group)
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in members and w not in came_from:
                        came_from[w] = v
                        following.append(w)
            frontier = following
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append(path[::-1])
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (src/{MODULES[a].relative_to(SRC)}:{graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return "\n  ".join(steps)


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "every-import"])
def test_no_import_cycles(module_level_only):
    graph = import_graph(module_level_only)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (break them with a leaf module both sides import):\n  " + \
        "\n\n  ".join(_describe(c, graph) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    """The checks above pass on an acyclic graph; here a cycle, a longer one and a package edge are found."""
    assert find_cycles({"a": {"b": 1}, "b": {"a": 2}, "c": {"a": 3}}) == [["a", "b", "a"]]
    long = find_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}})
    assert long == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_graph_reads_deferred_relative_and_package_imports(tmp_path, monkeypatch):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from bertwwm.sub.leaf import X\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "top.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bertwwm.late\n"
                                "def f():\n    from bertwwm import late\n")
    (pkg / "late.py").write_text("from .sub import leaf\n")
    (pkg / "sub" / "sibling.py").write_text("from bertwwm.sub import leaf\nimport bertwwm.sub.leaf as again\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES",
                        {_module_name(p): p for p in sorted(pkg.rglob("*.py"))})
    assert import_graph(True)["bertwwm.top"] == {}
    assert import_graph(False)["bertwwm.top"] == {"bertwwm.late": 5}
    # a submodule import runs its package first; a package's own submodules do not depend on it
    assert set(import_graph(False)["bertwwm.late"]) == {"bertwwm.sub", "bertwwm.sub.leaf"}
    assert import_graph(False)["bertwwm.sub.leaf"] == {}
    # naming its own package runs that package's __init__ (which imports leaf, and could import sibling)
    assert import_graph(False)["bertwwm.sub.sibling"] == {"bertwwm.sub": 1, "bertwwm.sub.leaf": 1}


def test_the_cli_starts_without_torch():
    """`bertwwm --help` imports cli.py only: the verbs' modules (and torch, transformers) load on demand."""
    code = ("import sys, bertwwm.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'jieba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# The stages in pipeline order (docs/architecture.md). A module may import its own stage package and earlier
# stages; never a later stage, nor another package of the same rank (tasks and pretrain do not know each other).
STAGES = {"core": 0, "text": 1, "data": 2, "convert": 3, "modeling": 4, "tasks": 5, "pretrain": 5,
          "report": 6, "finetune": 7, "demo": 8, "cli": 9, "__main__": 10}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package, which every module runs first


def test_every_module_belongs_to_a_stage():
    assert {_stage(m) for m in MODULES} - {None} <= set(STAGES), "add the new package to STAGES (and architecture.md)"


def test_no_upward_imports():
    upward = []
    for name, deps in import_graph(False).items():
        here = _stage(name)
        for dep, line in deps.items():
            there = _stage(dep)
            if here is None or there is None or there == here:
                continue
            if STAGES[there] >= STAGES[here]:
                upward.append(f"src/{MODULES[name].relative_to(SRC)}:{line}: {here} imports {dep} ({there})")
    assert not upward, "imports against the pipeline's direction:\n  " + "\n  ".join(upward)


def test_src_uses_the_new_module_names():
    """The pre-0.3 flat names (bertwwm.prepare, bertwwm.errors, ...) exist for users' code only."""
    import bertwwm

    old = [f"src/{MODULES[name].relative_to(SRC)}:{line}: {target}"
           for name, path in MODULES.items() for target, line, _ in _imports(name, path)
           if target.split(".")[1:2] and target.split(".")[1] in bertwwm.MOVED_MODULES]
    assert not old, "use the stage packages' names:\n  " + "\n  ".join(old)


def test_old_module_names_are_the_same_modules():
    import importlib

    import bertwwm

    for old, new in bertwwm.MOVED_MODULES.items():
        assert importlib.import_module(f"bertwwm.{old}") is importlib.import_module(f"bertwwm.{new}")
    from bertwwm.errors import UserError
    from bertwwm.core.errors import UserError as moved
    assert UserError is moved
