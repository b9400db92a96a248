"""No import cycles among ovdoc's modules, read statically (ast), so a loop cannot come back unnoticed.

Every import counts, also those inside functions (a lazy import still makes two modules depend on each
other), and so do `importlib.import_module("literal")` and the runtime's `host_module("feature")` door
to the host side. Importing `a.b.c` is an edge to `a.b.c` only: the parent packages' __init__ files are
not counted (every module would then depend on `ovdoc`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO


def module_names(root: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(module: str, path: Path, modules: dict[str, Path], extras: dict[str, str]) -> set[str]:
    """The ovdoc modules `module` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # `from a.b import c` where c is a name: the module is a.b
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target = node.args[0].value
            if name == "import_module" and isinstance(target, str):
                add(target)
            elif name == "host_module" and target in extras:
                add(extras[target])
    found.discard(module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: deep import chains must not hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(root: Path, package: str = "ovdoc") -> dict[str, set[str]]:
    modules = module_names(root, package)
    extras = {}
    host_extras = root / package / "runtime" / "host_extras.py"
    if host_extras.exists():
        tree = ast.parse(host_extras.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "EXTRAS":
                extras = {k: v[0] for k, v in ast.literal_eval(node.value).items()}
    return {name: imports_of(name, path, modules, extras) for name, path in modules.items()}


def test_ovdoc_has_no_import_cycles():
    graph = import_graph(REPO)
    assert len(graph) > 50  # the whole package was read
    assert not cycles(graph), "import cycles (break them by moving the shared part down a level):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles(graph))


def test_the_checker_finds_cycles(tmp_path):
    """Direct, lazy (inside a function), relative and importlib loops are all caught; a chain is not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "sub" / "c.py").write_text("from . import d\n")
    (pkg / "sub" / "d.py").write_text("import importlib\nimportlib.import_module('pkg.sub.c')\n")
    (pkg / "e.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]
