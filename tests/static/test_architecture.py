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


def _kit_modules() -> list[Path]:
    return sorted(
        path for package in sorted(KIT_PACKAGES) for path in (ROOT / package).rglob("*.py")
    )


def _reads_request_app_state(path: Path) -> bool:
    """`<x>.app.state` anywhere in the module: the lifespan's own `app.state` is not one."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "state"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "app"
        for node in ast.walk(tree)
    )


def test_app_state_is_read_through_the_typed_accessors_only():
    readers = [str(p.relative_to(ROOT)) for p in _kit_modules() if _reads_request_app_state(p)]
    assert readers == ["api/deps.py"]


def _imports_sqlalchemy_create_engine(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "sqlalchemy"
        and any(alias.name == "create_engine" for alias in node.names)
        for node in ast.walk(tree)
    )


def test_every_sync_engine_is_made_by_core_sync_engine():
    makers = [
        str(p.relative_to(ROOT)) for p in _kit_modules() if _imports_sqlalchemy_create_engine(p)
    ]
    assert makers == ["core/sync_engine.py"]
