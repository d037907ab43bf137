"""No import cycle within src/langplay, counting imports at module level and inside functions alike.

A function-local import hides a cycle from Python's import machinery, not from a reader: module A needs B and B
needs A is one concern split in two. The graph is read from the source (ast), so nothing is imported here.

An edge goes to the module an import names: `from langplay.x import y` is an edge to langplay.x.y when that is a
module (a package's submodule), else to langplay.x. Importing langplay.x.y from outside package langplay.x also runs
langplay.x's __init__ first: an edge to it as well (rewards.implicit -> evaluation.metrics runs evaluation/__init__,
which imports rewards). From inside the package that __init__ has already run, so no edge: a package importing its
own submodules to export them is not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names(src: Path = SRC) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under src/langplay."""
    names = {}
    for path in sorted((src / "langplay").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The langplay modules `module` (in `path`) imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            out.update(enclosing_packages(target, module, known) | ({target} & known))
    out.discard(module)
    return out


def enclosing_packages(target: str, importer: str, known: set[str]) -> set[str]:
    """The packages above `target` whose __init__ importing it runs: those that do not also enclose the importer."""
    parts = target.split(".")
    above = {".".join(parts[:i]) for i in range(2, len(parts))}  # not langplay itself: every module is inside it
    return {p for p in above if p in known and not (importer == p or importer.startswith(p + "."))}


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    names = module_names(src)
    return {module: imported_modules(path, module, set(names)) for module, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_function_level_cycle(tmp_path):
    package = tmp_path / "langplay"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import torch\nfrom langplay.b import f\n")
    (package / "b.py").write_text("def f():\n    from langplay import a\n    return a\n")
    (package / "c.py").write_text("from langplay.sub import d\n")
    (package / "f.py").write_text("from langplay.sub.e import x\n")
    (package / "sub" / "__init__.py").write_text("from .d import g\n")
    (package / "sub" / "d.py").write_text("from langplay.sub import e\n")
    (package / "sub" / "e.py").write_text("from ..c import x\n")
    graph = import_graph(tmp_path)
    assert graph["langplay.a"] == {"langplay.b"}
    assert graph["langplay.b"] == {"langplay.a"}
    assert graph["langplay.sub"] == {"langplay.sub.d"}
    assert graph["langplay.sub.e"] == {"langplay.c"}
    assert graph["langplay.f"] == {"langplay.sub", "langplay.sub.e"}  # sub's __init__ runs first
    assert cycles(graph) == [["langplay.a", "langplay.b"], ["langplay.c", "langplay.sub", "langplay.sub.d", "langplay.sub.e"]]


def test_no_import_cycle_within_src():
    found = cycles(import_graph())
    assert not found, "import cycles within src/langplay: " + "; ".join(" <-> ".join(c) for c in found)
