"""Every module under `bff/` says what it exports, and says it exactly (after httpx's
tests/test_exported_members.py).

A module's `__all__`, as a set, equals the public names it defines at top level: classes,
functions and assignments (type aliases and constants too) whose name does not start with `_`.
Names it imports are not its own and stay out. Two kinds of assignment are plumbing, not API, and
are left out as well: a logger (`logging.getLogger(...)`) and a type variable (`TypeVar(...)`).

A package's `__init__` is its front door and may re-export: its `__all__` is its own definitions
plus names it imports from other `bff` modules (`bff/__init__.py`: `create_app`, `Settings`,
`load_settings`; `bff/stores/__init__.py`: `StoreUnavailable`, which the `Store` methods raise),
and `bff/__init__.py` also lists `__version__`. A re-exported name must be in the `__all__` of the
module it comes from, so a re-export is always of something public.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import bff

PACKAGE_DIR = Path(bff.__file__).resolve().parent
INCLUDED_PRIVATE_MEMBERS = {"bff": {"__version__"}}
PLUMBING_CALLS = {"getLogger", "TypeVar"}


def module_name(path: Path) -> str:
    parts = ("bff", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_plumbing(value: ast.expr | None) -> bool:
    if not isinstance(value, ast.Call):
        return False
    function = value.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name in PLUMBING_CALLS


def _assigned_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign) and not _is_plumbing(node.value):
        return [name.id for target in node.targets for name in ast.walk(target) if isinstance(name, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not _is_plumbing(node.value):
        return [node.target.id]
    return []


def defined_names(tree: ast.Module) -> set[str]:
    """The public names the module's own top-level code defines (also inside a top-level `if`/`try`)."""
    names: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                walk(node.orelse)
                walk(node.finalbody)
                for handler in node.handlers:
                    walk(handler.body)
            else:
                names.update(_assigned_names(node))

    walk(tree.body)
    return {name for name in names if not name.startswith("_")}


def imported_from_bff(tree: ast.Module) -> dict[str, str]:
    """Names the module imports at top level from `bff` modules, each with the module it comes from."""
    return {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.module.split(".")[0] == "bff"
        for alias in node.names
    }


def declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(target, ast.Name) and target.id == "__all__" for target in targets):
            assert isinstance(node, ast.Assign | ast.AnnAssign)
            assert node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, list), "__all__ must be a list"
            return value
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_declares_exactly_what_it_defines(name: str) -> None:
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    exported = declared_all(tree)
    assert exported is not None, f"{name} declares no __all__"
    assert len(exported) == len(set(exported)), f"{name}: __all__ lists a name twice"
    expected = defined_names(tree) | INCLUDED_PRIVATE_MEMBERS.get(name, set())
    if path.name == "__init__.py":
        reexports = imported_from_bff(tree)
        for member in set(exported) - expected:
            source = reexports.get(member)
            assert source is not None, f"{name}.__all__ lists {member!r}, which it neither defines nor imports"
            assert member in importlib.import_module(source).__all__, (
                f"{name} re-exports {member!r}, private to {source}"
            )
            expected.add(member)
    assert set(exported) == expected, (
        f"{name}.__all__: missing {sorted(expected - set(exported))}, not its own {sorted(set(exported) - expected)}"
    )
    if not name.endswith("__main__"):  # importing it runs the command
        module = importlib.import_module(name)
        assert all(hasattr(module, member) for member in exported)
