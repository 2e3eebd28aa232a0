"""The repository's own tooling, checked without a runner: the schemas the static tests use
(tests/schemas) are the ones their README names; the pre-commit hooks are local and each is a
step of make lint."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.schemas import SCHEMAS, schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda path: path.name)
def test_every_schema_names_its_source_and_is_the_file_it_names(path):
    rows = {
        row[0].strip("` "): row
        for row in (
            line.strip("|").split("|")
            for line in (SCHEMAS / "README.md").read_text().splitlines()
            if line.startswith("| `")
        )
    }
    assert path.name in rows, f"{path.name} has no row in tests/schemas/README.md"
    _, _, source, version, digest = (cell.strip() for cell in rows[path.name])
    assert re.fullmatch(r"<https://github\.com/[^>]+>", source)
    assert version
    assert digest.strip("`") == hashlib.sha256(path.read_bytes()).hexdigest(), "changed since"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def lint_steps() -> list[list[str]]:
    """make lint's recipe lines, as words."""
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe
    return [line.split() for line in recipe.group(1).splitlines()]


PRE_COMMIT = ROOT / ".pre-commit-config.yaml"


# pre-commit-config.json takes three definitions (file types, language, stages) from SchemaStore's
# pre-commit-hooks.json, not copied here: this check lets any value through them, and pre-commit's
# own check (the next test) holds those fields to pre-commit's rules.
HOOK_DEFINITIONS = Registry().with_resource(
    "https://json.schemastore.org/pre-commit-hooks.json",
    Resource.from_contents(
        {"definitions": {"file_types": {}, "language": {}, "stages": {}}},
        default_specification=DRAFT7,
    ),
)


def test_the_pre_commit_configuration_matches_its_schema():
    validator = schema("pre-commit-config.json", HOOK_DEFINITIONS)
    assert [e.message for e in validator.iter_errors(load(PRE_COMMIT))] == []


def test_pre_commit_itself_accepts_the_configuration():
    proc = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", str(PRE_COMMIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pre_commit_hooks_are_local_and_each_is_a_step_of_make_lint():
    """Nothing to download, and make lint runs everything a hook runs (on every file, where the
    hook has only those staged): a step is the hook's command with the files appended."""
    repos = load(PRE_COMMIT)["repos"]
    assert [repo["repo"] for repo in repos] == ["local"]
    steps = lint_steps()
    hooks = repos[0]["hooks"]
    for hook in hooks:
        words = [word for word in hook["entry"].split() if word != "--force-exclude"]
        assert any(step[: len(words)] == words for step in steps), hook["id"]
    ids = {hook["id"] for hook in hooks}
    assert {"ruff-check", "ruff-format", "mypy", "shellcheck", "hadolint", "large-files"} <= ids
    assert steps[-1] == ["$(MAKE)", "--no-print-directory", "lint-alerts"], "the Docker step"


def test_a_hook_setting_of_the_wrong_type_is_caught():
    hook = {"id": "x", "name": "x", "entry": "true", "language": "system", "pass_filenames": "no"}
    config = {"repos": [{"repo": "local", "hooks": [hook]}]}
    assert list(schema("pre-commit-config.json", HOOK_DEFINITIONS).iter_errors(config)) != []
