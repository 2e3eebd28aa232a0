"""deploy/swarm/render.py on made-up `docker compose config` output: what it drops, moves,
converts and versions, and which services each deploy phase holds."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys

import pytest

from tests.support import ROOT

_spec = importlib.util.spec_from_file_location("swarm_render", ROOT / "deploy/swarm/render.py")
assert _spec and _spec.loader
render_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_module)
render = render_module.render

FILES = {
    "/local/secrets/db_pw": b"s3cret",
    "/local/rel/proxy/dynamic/tls.yml": b"tls: {}\n",
    "/local/rel/proxy/dynamic/mw.yml": b"http: {}\n",
}


def fake_fs():
    return {
        "read": lambda p: FILES[p],
        "is_dir": lambda p: p == "/local/rel/proxy/dynamic",
        "list_dir": lambda p: ["tls.yml", "mw.yml"],
    }


def config() -> dict:
    return {
        "name": "kit",
        "x-swarm-flags": {
            "proxy": {"replace": "--providers.docker", "with": ["--providers.swarm=true"]}
        },
        "services": {
            "db": {
                "image": "postgres:17",
                "restart": "unless-stopped",
                "security_opt": ["no-new-privileges:true"],
                "shm_size": "268435456",
                "tmpfs": ["/tmp"],  # noqa: S108 - a mount target
                "secrets": [{"source": "db_pw", "target": "/run/secrets/db_pw"}],
                "volumes": [
                    {"type": "volume", "source": "pgdata", "target": "/data", "volume": {}}
                ],
                "networks": {"backend": None},
                "deploy": {"resources": {"limits": {"cpus": 2, "pids": "512"}}, "placement": {}},
            },
            "migrate": {
                "image": "app:1",
                "build": {"context": "."},
                "restart": "no",
                "depends_on": {"db": {"condition": "service_healthy"}},
                "deploy": {"mode": "replicated-job"},
                "networks": {"backend": None},
                "secrets": [{"source": "db_pw"}],
            },
            "api": {
                "image": "app:1",
                "env_file": [{"path": ".env"}],
                "environment": {"A": "1", "FROM_SHELL": None},
                "depends_on": {"migrate": {"condition": "service_completed_successfully"}},
                "labels": {"traefik.enable": "true", "com.example.team": "web"},
                "networks": {"edge": None, "backend": None},
                "deploy": {"replicas": 3},
            },
            "proxy": {
                "image": "traefik",
                "command": ["--log=1", "--providers.docker=true", "--providers.docker.x=y"],
                "ports": [{"target": 8443, "published": "443", "mode": "host"}],
                "networks": {"edge": {"ipv4_address": "172.30.250.2"}},
                "volumes": [
                    {"type": "bind", "source": "/local/rel/proxy/dynamic", "target": "/etc/d"},
                    {"type": "bind", "source": "/var/run/docker.sock", "target": "/s", "bind": {}},
                ],
            },
        },
        "networks": {
            "edge": {
                "name": "kit_edge",
                "driver": "overlay",
                "ipam": {"config": [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}]},
            },
            "backend": {"name": "kit_backend", "driver": "overlay", "internal": True},
            "unused": {"name": "kit_unused"},
        },
        "volumes": {"pgdata": {"name": "kit_pgdata"}, "unused": {"name": "kit_unused"}},
        "secrets": {
            "db_pw": {"name": "kit_db_pw", "file": "/local/secrets/db_pw"},
            "unused": {"name": "kit_unused", "file": "/nowhere"},
        },
    }


def rendered(**kwargs) -> dict:
    args = {
        "stack": "kit",
        "release": "r7",
        "relocate": {"/local/secrets": "/srv/secrets", "/local/rel": "/srv/releases/r7"},
        **fake_fs(),
        **kwargs,
    }
    return render(config(), **args)


def test_container_only_keys_go_and_types_are_swarms():
    db = rendered()["services"]["db"]
    for key in ("restart", "security_opt", "shm_size", "tmpfs", "depends_on"):
        assert key not in db
    assert db["deploy"]["resources"]["limits"] == {"cpus": "2", "pids": 512}
    assert "placement" not in db["deploy"]
    assert {"type": "tmpfs", "target": "/tmp"} in db["volumes"]  # noqa: S108
    shm = {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 268435456}}  # noqa: S108
    assert shm in db["volumes"]
    assert "build" not in rendered()["services"]["migrate"]


def test_traefik_labels_move_to_the_service_and_others_stay():
    api = rendered()["services"]["api"]
    assert api["deploy"]["labels"] == {"traefik.enable": "true"}
    assert api["labels"] == {"com.example.team": "web"}
    assert "env_file" not in api
    assert api["environment"] == {"A": "1"}


def test_proxy_flags_are_replaced_ports_typed_and_fixed_address_dropped():
    proxy = rendered()["services"]["proxy"]
    assert proxy["command"] == ["--log=1", "--providers.swarm=true"]
    assert proxy["ports"] == [{"target": 8443, "published": 443, "mode": "host"}]
    assert proxy["networks"] == {"edge": None}


def test_a_replacement_that_matches_nothing_is_an_error():
    c = config()
    c["x-swarm-flags"]["proxy"]["replace"] = "--providers.nothing"
    with pytest.raises(ValueError, match="no flag"):
        render(c, stack="kit", **fake_fs())


def test_secrets_are_versioned_by_content_and_relocated():
    out = rendered()
    digest = hashlib.sha256(b"s3cret").hexdigest()[:12]
    assert out["secrets"] == {
        "db_pw": {"name": f"kit_db_pw_{digest}", "file": "/srv/secrets/db_pw"}
    }
    FILES["/local/secrets/db_pw"] = b"rotated"
    try:
        assert rendered()["secrets"]["db_pw"]["name"] != f"kit_db_pw_{digest}"
    finally:
        FILES["/local/secrets/db_pw"] = b"s3cret"


def test_a_release_directory_mount_becomes_one_config_per_file():
    out = rendered()
    proxy = out["services"]["proxy"]
    assert proxy["volumes"] == [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]
    assert sorted(c["target"] for c in proxy["configs"]) == ["/etc/d/mw.yml", "/etc/d/tls.yml"]
    tls = out["configs"]["proxy_tls_yml"]
    assert tls["file"] == "/srv/releases/r7/proxy/dynamic/tls.yml"
    digest = hashlib.sha256(FILES["/local/rel/proxy/dynamic/tls.yml"]).hexdigest()[:12]
    assert tls["name"] == f"kit_proxy_tls_yml_{digest}"


def test_networks_and_volumes_are_the_stacks_and_only_those_used():
    out = rendered()
    assert out["networks"] == {
        "backend": {"driver": "overlay", "internal": True},
        "edge": {"driver": "overlay", "ipam": {"config": [{"subnet": "10.9.0.0/24"}]}},
    }
    assert out["volumes"] == {"pgdata": {}}


def test_jobs_carry_the_release_so_they_run_once_per_deploy():
    out = rendered()
    assert out["services"]["migrate"]["deploy"]["labels"] == {"kit.release": "r7"}
    assert "kit.release" not in (out["services"]["db"]["deploy"].get("labels") or {})


@pytest.mark.parametrize(
    ("phase", "services"),
    [
        ("all", ["api", "db", "migrate", "proxy"]),
        ("needs", ["db"]),
        ("jobs", ["db", "migrate"]),
        ("services", ["api", "db", "proxy"]),
    ],
)
def test_phases(phase, services):
    assert sorted(rendered(phase=phase)["services"]) == services


def test_command_line_names_and_errors(monkeypatch, capsys):
    c = config()
    del c["services"]["proxy"]  # no files to read outside the fake file system
    del c["x-swarm-flags"]
    c["secrets"] = {"db_pw": {"external": True}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(c)))
    assert render_module.main(["--stack", "kit", "--phase", "jobs", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["db", "migrate"]
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(json.dumps({"services": {}, "x-swarm-flags": {"x": {}}}))
    )
    assert render_module.main(["--stack", "kit"]) == 1
    assert "names no such service" in capsys.readouterr().err


def test_a_service_sharing_a_pinned_volume_goes_where_the_volume_is():
    c = config()
    c["services"]["db"]["deploy"]["placement"] = {"constraints": ["node.labels.kit.data == true"]}
    c["services"]["backup"] = {
        "image": "db:current",
        "volumes": [{"type": "volume", "source": "pgdata", "target": "/data", "read_only": True}],
    }
    out = render(c, stack="kit", **fake_fs())["services"]
    assert out["backup"]["deploy"]["placement"]["constraints"] == ["node.labels.kit.data == true"]
    assert "placement" not in (out["api"].get("deploy") or {})


def test_a_bind_mounted_file_of_the_release_becomes_a_config():
    c = config()
    c["services"]["api"]["volumes"] = [
        {
            "type": "bind",
            "source": "/local/rel/proxy/dynamic/tls.yml",
            "target": "/etc/k",
            "bind": {},
        }
    ]
    out = render(c, stack="kit", relocate={"/local/rel": "/srv/r"}, **fake_fs())
    assert out["services"]["api"]["configs"] == [{"source": "api_tls_yml", "target": "/etc/k"}]
    assert out["configs"]["api_tls_yml"]["file"] == "/srv/r/proxy/dynamic/tls.yml"


def test_the_images_to_ship_are_those_the_compose_files_build():
    c = config()
    c["services"]["api"]["build"] = {"context": "."}
    assert render_module.built_images(c) == ["app:1"]


@pytest.mark.parametrize(
    ("spec", "mount"),
    [
        ("/tmp", {"type": "tmpfs", "target": "/tmp"}),  # noqa: S108 - mount targets
        ("/tmp:mode=1777", {"type": "tmpfs", "target": "/tmp", "tmpfs": {"mode": 0o1777}}),  # noqa: S108
        (
            "/run/x:mode=0700,size=64m",
            {"type": "tmpfs", "target": "/run/x", "tmpfs": {"mode": 0o700, "size": 64 << 20}},
        ),
    ],
)
def test_tmpfs_options_become_the_mounts_options(spec, mount):
    """Compose's `/tmp:mode=1777` is a path and options: as a target whole, Swarm mounted nothing
    at /tmp and the read-only db could not start (seen on the three-node swarm)."""
    assert render_module._tmpfs_mount(spec) == mount


def test_a_tmpfs_option_swarm_lacks_stops_the_render():
    with pytest.raises(SystemExit, match="noexec"):
        render_module._tmpfs_mount("/tmp:noexec")  # noqa: S108
