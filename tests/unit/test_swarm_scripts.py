"""The Swarm deploy scripts' pure parts, run by bash without a swarm:
tests/e2e/full/test_swarm.py plays the whole of make swarm-deploy on a three-node swarm."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import ROOT
from tests.support.shell import bash, shell_function

ENGINES = (
    shell_function("deploy/swarm/remote-lib.sh", "engines")
    + "\n"
    + shell_function("deploy/swarm/remote-lib.sh", "engine_of")
)


@pytest.mark.parametrize(
    ("node", "endpoint"),
    [("node1", "unix:///var/run/docker.sock"), ("node2", "ssh://deploy@10.0.0.2")],
)
def test_a_node_s_engine_is_found_by_its_hostname(node, endpoint):
    code = (
        ENGINES + '\nSWARM_ENGINES="node1=unix:///var/run/docker.sock  node2=ssh://deploy@10.0.0.2"'
    )
    proc = bash(code + '\nengine_of "$1"', node)
    assert (proc.returncode, proc.stdout.strip()) == (0, endpoint)


def test_a_node_missing_from_swarm_engines_is_named():
    proc = bash(ENGINES + '\nSWARM_ENGINES="node1=tcp://a:2375"\nengine_of node9')
    assert proc.returncode != 0
    assert "node node9 is not in SWARM_ENGINES" in proc.stderr


def test_without_swarm_engines_the_default_engine_does_everything():
    proc = bash(ENGINES + '\nSWARM_ENGINES=""\nengines; echo "[$(engine_of node7)]"')
    assert proc.stdout.split() == ["-=", "[]"]


def test_the_server_side_libraries_define_their_functions_and_run_nothing():
    # make swarm-deploy sends deploy/remote-lib.sh and deploy/swarm/remote-lib.sh ahead of
    # deploy/swarm/remote.sh: sent alone, they define functions and run no command.
    for libraries, function in [
        (["deploy/remote-lib.sh"], "record"),
        (["deploy/remote-lib.sh", "deploy/swarm/remote-lib.sh"], "swarm_preflight"),
    ]:
        script = "".join((ROOT / name).read_text() for name in libraries)
        script += f"\ntype {function} >/dev/null && echo library"
        proc = subprocess.run(
            ["bash", "-s", "--", "log"],
            input=script,
            capture_output=True,
            text=True,
            env={
                "PATH": "/usr/bin:/bin",
                "DEPLOY_PATH": "/nonexistent",
                "DEPLOY_PROJECT": "kit",
                "APP_IMAGE": "kit",
            },
            timeout=30,
        )
        assert (proc.returncode, proc.stdout) == (0, "library\n"), libraries


def test_the_local_libraries_sourced_run_no_command():
    proc = bash(f"source {ROOT}/deploy/lib.sh; type release_name >/dev/null && echo sourced")
    assert (proc.returncode, proc.stdout) == (0, "sourced\n")
    proc = bash(
        f"cd {ROOT}; source deploy/lib.sh; source deploy/swarm/lib.sh;"
        " type swarm_deploy >/dev/null && echo sourced"
    )
    assert (proc.returncode, proc.stdout) == (0, "sourced\n")


ENTRY_POINTS = [
    "deploy/deploy.sh",
    "deploy/remote.sh",
    "deploy/swarm/deploy.sh",
    "deploy/swarm/remote.sh",
]


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_an_entry_point_is_only_a_main(script):
    """The functions live in the libraries (deploy/lib.sh, deploy/remote-lib.sh and swarm/'s);
    an entry point parses its command and calls them."""
    functions = re.findall(r"^\s*([A-Za-z_][\w-]*)\s*\(\)\s*\{", (ROOT / script).read_text(), re.M)
    assert set(functions) <= {"main"}, functions


@pytest.mark.parametrize(
    ("library", "sent"),
    [
        ("deploy/lib.sh", "deploy/remote-lib.sh deploy/rotate-lib.sh deploy/remote.sh"),
        (
            "deploy/swarm/lib.sh",
            "deploy/remote-lib.sh deploy/swarm/remote-lib.sh deploy/swarm/remote.sh",
        ),
    ],
)
def test_remote_sends_the_server_side_libraries_ahead_of_its_entry_point(library, sent):
    assert f"< <(cat {sent})" in shell_function(library, "remote")


def test_swarm_deploy_refuses_building_on_the_server(tmp_path):
    env_file = tmp_path / "production.env"
    env_file.write_text("API_DOMAIN=api.example.com\n")
    proc = subprocess.run(
        [str(ROOT / "deploy/swarm/deploy.sh"), "status"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "DEPLOY_SETTINGS": "/nonexistent",
            "DEPLOY_HOST": "h",
            "DEPLOY_PATH": "/srv",
            "DEPLOY_ENV_FILE": str(env_file),
            "DEPLOY_SECRETS_DIR": str(tmp_path),
            "DEPLOY_IMAGES": "build",
        },
        timeout=30,
    )
    assert proc.returncode != 0
    assert "DEPLOY_IMAGES=build is single-host only" in proc.stderr
