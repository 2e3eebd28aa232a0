"""The repository's own tooling, checked without a runner: the schemas the static tests use
(tests/schemas) are the ones their README names; the pre-commit hooks are local and each is a
step of make lint."""

from __future__ import annotations

import hashlib
import os
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
from tests.support.compose_config import SECRET_NAMES

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


class GitHubLoader(yaml.SafeLoader):
    """YAML as GitHub reads it: `on` is a key, not YAML 1.1's True; true and false are booleans."""


GitHubLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GitHubLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=GitHubLoader)  # noqa: S506 - a SafeLoader


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


WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (WORKFLOWS / "test.yml", "github-workflow.json"),
        (WORKFLOWS / "deploy.yml", "github-workflow.json"),
        (ROOT / ".github" / "dependabot.yml", "dependabot-2.0.json"),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_the_github_files_match_their_schemas(path, name):
    assert [e.message for e in schema(name).iter_errors(load(path))] == []


def makefile_targets() -> set[str]:
    return set(re.findall(r"^\.PHONY: (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M))


def make_targets(command: str) -> list[str]:
    """The targets of each `make ...` in a shell command; anything else is refused."""
    targets = []
    for part in re.split(r"\s*(?:&&|;|\n)\s*", command.strip()):
        words = part.split()
        assert words[:1] == ["make"], f"not a make target: {part!r}"
        targets += [word for word in words[1:] if not word.startswith("-") and "=" not in word]
    return targets


def test_the_test_workflow_runs_only_make_targets_and_the_ones_ci_runs():
    """So the workflow and this repository's CI (.ci/run) cannot drift: each checks through the
    same make targets. A runner's only other step installs a package, as .ci/run does."""
    workflow = load(WORKFLOWS / "test.yml")
    ran = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "run" not in step:
                continue
            if step["run"].startswith("sudo apt-get "):
                continue
            ran += make_targets(step["run"])
    assert set(ran) <= makefile_targets()
    assert {"lint", "test", "test-all"} <= set(ran)
    ci = re.findall(r"^make ([a-z][a-z-]*)$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
    assert ci
    assert set(ci) <= set(ran), "a tier .ci/run calls that the workflow does not"


def test_the_deploy_workflow_never_overlaps_nor_cancels_a_deploy():
    workflow = load(WORKFLOWS / "deploy.yml")
    triggers = workflow["on"]
    assert "workflow_dispatch" in triggers
    assert triggers["push"] == {"tags": ["v*"]}
    assert workflow["concurrency"] == {"group": "deploy", "cancel-in-progress": False}
    steps = workflow["jobs"]["deploy"]["steps"]
    assert steps[-1]["run"] == "make deploy"


def test_the_deploy_workflow_writes_what_make_deploy_reads(tmp_path):
    """Its setup step, run by bash with made-up secrets: the settings it writes load, and the
    secret files pass make deploy's own check (deploy/lib.sh)."""
    workflow = load(WORKFLOWS / "deploy.yml")
    job = workflow["jobs"]["deploy"]
    setup = job["steps"][1]
    secrets = {
        "SETTINGS": "DEPLOY_HOST=deploy@203.0.113.10\nDEPLOY_PATH=/srv/kit",
        "PRODUCTION_ENV": "API_DOMAIN=api.example.com",
        "SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
        "KNOWN_HOSTS": "203.0.113.10 ssh-ed25519 AAAAC3Nza",
        **{name.upper(): f"{name}-value" for name in SECRET_NAMES},
    }
    assert set(setup["env"]) == set(secrets)
    settings = tmp_path / "deploy.env"
    env = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(tmp_path),
        "DEPLOY_SETTINGS": str(settings),
    }
    proc = subprocess.run(
        ["bash", "-c", setup["run"]], env={**env, **secrets}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "secrets" / "jwt_secret").read_text() == "jwt_secret-value"
    assert (tmp_path / "secrets" / "pgbackrest_ssh_key").read_text().endswith("\n")
    assert (tmp_path / "known_hosts").read_text() == secrets["KNOWN_HOSTS"] + "\n"
    check = (
        f"cd {ROOT}; source deploy/lib.sh; load_settings; check_secrets;"
        ' printf "%s\\n" "$DEPLOY_HOST" "$DEPLOY_KNOWN_HOSTS" "$DEPLOY_SSH_OPTS"'
    )
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", check], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "deploy@203.0.113.10",
        f"{tmp_path}/known_hosts",
        f"-i {tmp_path}/deploy_key -o IdentitiesOnly=yes",
    ]

    missing = subprocess.run(
        ["bash", "-c", setup["run"]],
        env={**env, **secrets, "JWT_SECRET": ""},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert "repository secret JWT_SECRET is not set" in missing.stdout


def test_the_deploy_workflow_writes_every_secret_make_deploy_ships():
    proc = subprocess.run(
        ["bash", "-c", f"source {ROOT}/deploy/lib.sh; echo ${{SECRETS[*]}}"],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == SECRET_NAMES
    run = load(WORKFLOWS / "deploy.yml")["jobs"]["deploy"]["steps"][1]["run"]
    assert f"for name in {' '.join(SECRET_NAMES)}; do" in run
