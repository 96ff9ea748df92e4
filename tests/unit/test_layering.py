"""The command line sits on top: no module of the package imports it (a check once did)."""

from __future__ import annotations

import ast
from pathlib import Path

import buildr_podman

PACKAGE = Path(buildr_podman.__file__).parent
ALLOWED = {"__main__.py", "cli.py"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_module_imports_the_command_line() -> None:
    offenders = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
                 if path.relative_to(PACKAGE).as_posix() not in ALLOWED
                 and "buildr_podman.cli" in _imports(path)]
    assert offenders == []
