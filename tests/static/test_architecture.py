"""The package picture of ARCHITECTURE.md, enforced: core imports neither process's code, and the
api and the worker never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

KIT_PACKAGES = {"core", "api", "worker"}
ALLOWED = {"core": {"core"}, "api": {"core", "api"}, "worker": {"core", "worker"}}


def _kit_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & KIT_PACKAGES


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package):
    offending = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if (imported := _kit_imports(path)) - ALLOWED[package]
    }
    assert offending == {}, f"{package}/ may import only {sorted(ALLOWED[package])}"


def test_the_check_sees_imports():
    """A guard against a check that cannot fail: the parser finds a known import."""
    assert "core" in _kit_imports(ROOT / "api" / "main.py")
