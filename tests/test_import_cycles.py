"""No two `bff` modules import each other, directly or around a longer loop.

The graph is read from the source with `ast`, so it holds every `import` and `from ... import`
of a `bff.*` module, at top level, inside functions (the lazy ones) and under `TYPE_CHECKING`
alike: a lazy import only hides a cycle until the day it runs first. `from bff.x import y` is an
edge to `bff.x.y` when that is a module, else to `bff.x`. A package's `__init__` running before its
modules is not counted: that is how packages load, not an import written in the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bff

PACKAGE_DIR = Path(bff.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ("bff", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def bff_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The `bff` modules that the module `name` (source at `path`) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = bff_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as the list of its modules, the first repeated at the end; or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph[module]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle is not None:
                return cycle
    return None


def test_no_import_cycle_between_bff_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_lazy_imports_and_cycles() -> None:
    """The checker itself: `bff.cli` imports `bff.demo.run` only inside `main`, and a made-up
    two-module loop is reported by name."""
    graph = import_graph()
    assert "bff.demo.run" in graph["bff.cli"]
    assert "bff.server" in graph["bff.demo.run"]
    assert "bff.cli" not in graph["bff.demo.run"]
    assert find_cycle({"bff.a": {"bff.b"}, "bff.b": {"bff.a"}}) == ["bff.a", "bff.b", "bff.a"]
    assert find_cycle({"bff.a": {"bff.b"}, "bff.b": set()}) is None
