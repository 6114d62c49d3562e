"""docs/architecture.md against the code: every module of `bff` (`demo/` aside) is listed once,
with exactly the modules of `bff` it imports, so the page says how data flows today."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bff"
_ROW = re.compile(r"^\| `([\w/]+\.py)` \| .+ \| (.+) \|$")


def imports_of(module: Path) -> set[str]:
    """The modules of `bff` that `module` imports anywhere, named as the page names them."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "bff":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bff."):
            found.add(node.module.removeprefix("bff."))
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("bff.") for alias in node.names if alias.name.startswith("bff."))
    return found


def documented() -> list[tuple[str, set[str]]]:
    rows = []
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            imports = match[2].strip()
            rows.append((match[1], set() if imports == "—" else {name.strip(" `") for name in imports.split(",")}))
    return rows


def test_every_module_is_listed_once() -> None:
    every = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    modules = {name for name in every if not name.startswith("demo/") and name not in ("__init__.py", "__main__.py")}
    listed = [module for module, _ in documented()]
    assert sorted(listed) == sorted(modules)


def test_each_module_imports_what_the_page_says() -> None:
    rows = documented()
    assert rows, "no module table found in docs/architecture.md"
    assert {module: imports_of(PACKAGE / module) for module, _ in rows} == dict(rows)
