"""Turn `docker compose -f compose.yaml -f compose.prod.yaml -f compose.swarm.yaml config --format
json` into a stack file `docker stack deploy` accepts (JSON is YAML). Standard library only: it
runs on the machine that deploys.

Every fact comes from the compose files; this only translates what Swarm spells differently or
lacks: build, depends_on, restart and the other container-only keys go; tmpfs and shm_size become
tmpfs mounts; Traefik's labels move to the service (deploy.labels, what its Swarm provider reads);
fixed addresses go (Swarm has none); a file secret gets a name versioned by its content, so a
changed secret rolls the services that use it (a Swarm secret is immutable); a bind-mounted
directory of the release (Traefik's dynamic configuration) becomes one Swarm config per file,
versioned the same way, since the edge node does not have the release's files.

    python3 deploy/swarm/render.py --stack NAME [--release R] [--phase all|needs|jobs|services]
        [--relocate LOCAL=REMOTE ...] < config.json > stack.json

--phase needs: what the one-shot jobs (deploy.mode *-job) depend on (the migrations need the
database); jobs: the jobs and their needs; services: everything but the jobs. make swarm-deploy
deploys them in that order, waiting for each (healthy, or the jobs exited 0). --relocate: files
are read (hashed) at LOCAL, and the stack file names them at REMOTE, where the manager's docker
CLI reads them. --names: the phase's service names, one a line, instead of the stack file;
--images: the images the compose files build, one a line (shipped to every node).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Keys `docker stack deploy` ignores (with a warning) or refuses, or that mean nothing on Swarm.
# security_opt: no-new-privileges is not a Swarm service option (docs/swarm.md).
DROPPED = {
    "build",
    "depends_on",
    "restart",
    "security_opt",
    "network_mode",
    "env_file",
    "container_name",
    "profiles",
    "pull_policy",
    "shm_size",
    "tmpfs",
}
# Network settings Swarm's overlay networks do not take per service.
NETWORK_KEYS = {"aliases"}
JOB_MODES = {"replicated-job", "global-job"}
RELEASE_LABEL = "kit.release"

Json = dict[str, Any]


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _tmpfs_mount(spec: str) -> Json:
    """Compose's `tmpfs: ["/tmp:mode=1777,size=64m"]` as a Swarm mount: the options after the
    first colon (mode in octal, size in bytes or with k/m/g) become the mount's tmpfs options."""
    target, _, options = spec.partition(":")
    mount: Json = {"type": "tmpfs", "target": target}
    tmpfs: Json = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "mode":
            tmpfs["mode"] = int(value, 8)
        elif key == "size":
            units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
            scale = units.get(value[-1:].lower(), 1)
            tmpfs["size"] = int(value.rstrip("kKmMgG")) * scale
        else:
            raise SystemExit(f"render: tmpfs option {option!r} of {spec!r} has no Swarm equivalent")
    if tmpfs:
        mount["tmpfs"] = tmpfs
    return mount


def _relocated(path: str, relocate: dict[str, str]) -> str:
    for local, remote in relocate.items():
        if path == local or path.startswith(local.rstrip("/") + "/"):
            return remote.rstrip("/") + path[len(local.rstrip("/")) :]
    return path


def is_job(service: Json) -> bool:
    return (service.get("deploy") or {}).get("mode") in JOB_MODES


def select(services: dict[str, Json], phase: str) -> list[str]:
    """The services of a phase, in name order."""
    if phase == "all":
        return sorted(services)
    jobs = {name for name, s in services.items() if is_job(s)}
    if phase == "services":
        return sorted(set(services) - jobs)
    if phase not in ("jobs", "needs"):
        raise ValueError(f"unknown phase {phase!r}")
    chosen, todo = set(), list(jobs)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend((services[name].get("depends_on") or {}).keys())
    return sorted(chosen - jobs if phase == "needs" else chosen)


def _command(service: Json, flags: Json | None) -> list[str] | None:
    command = service.get("command")
    if not flags or command is None:
        return command
    prefix = flags["replace"]
    kept = [arg for arg in command if not str(arg).startswith(prefix)]
    if len(kept) == len(command):
        raise ValueError(f"x-swarm-flags: no flag of the service starts with {prefix!r}")
    return kept + list(flags["with"])


def render_service(
    name: str,
    service: Json,
    *,
    flags: Json | None,
    release: str | None,
    configs: dict[str, Json],
    relocate: dict[str, str],
    is_dir: Callable[[str], bool],
    list_dir: Callable[[str], list[str]],
    read: Callable[[str], bytes],
    stack: str,
) -> Json:
    out: Json = {k: v for k, v in service.items() if k not in DROPPED and v is not None}
    if "command" in out:
        out["command"] = _command(service, flags)
    if "environment" in out:
        # null: "from the deploying shell" to the CLI; compose already resolved what it could.
        out["environment"] = {k: v for k, v in out["environment"].items() if v is not None}

    deploy: Json = dict(service.get("deploy") or {})
    limits = dict((deploy.get("resources") or {}).get("limits") or {})
    if "cpus" in limits:
        limits["cpus"] = str(limits["cpus"])
    if "pids" in limits:
        limits["pids"] = int(limits["pids"])
    if limits:
        deploy["resources"] = {**deploy.get("resources", {}), "limits": limits}
    if not (deploy.get("placement") or None):
        deploy.pop("placement", None)
    labels = dict(out.pop("labels", None) or {})
    service_labels = {k: v for k, v in labels.items() if k.startswith("traefik.")}
    if {k: v for k, v in labels.items() if k not in service_labels}:
        out["labels"] = {k: v for k, v in labels.items() if k not in service_labels}
    if release and is_job(service):
        # A job runs again when its spec changes: once per release.
        service_labels[RELEASE_LABEL] = release
    if service_labels:
        deploy["labels"] = {**(deploy.get("labels") or {}), **service_labels}
    if deploy:
        out["deploy"] = deploy

    if "ports" in out:
        out["ports"] = [
            {**p, "published": int(p["published"])} if "published" in p else p for p in out["ports"]
        ]
    if "networks" in out:
        out["networks"] = {
            net: {k: v for k, v in (opts or {}).items() if k in NETWORK_KEYS} or None
            for net, opts in out["networks"].items()
        }

    volumes: list[Json] = []
    for volume in service.get("volumes") or []:
        source = volume.get("source", "")
        if volume.get("type") == "bind" and relocate and _relocated(source, relocate) != source:
            # A Swarm config per file: the node that runs the task has no release directory.
            if is_dir(source):
                files = [
                    (f"{source.rstrip('/')}/{f}", f"{volume['target'].rstrip('/')}/{f}")
                    for f in sorted(list_dir(source))
                ]
            else:
                files = [(source, volume["target"])]
            for path, target in files:
                key = f"{name}_{path.rsplit('/', 1)[-1]}".replace(".", "_")
                configs[key] = {
                    "name": f"{stack}_{key}_{_version(read(path))}",
                    "file": _relocated(path, relocate),
                }
                out.setdefault("configs", []).append({"source": key, "target": target})
            continue
        volumes.append({k: v for k, v in volume.items() if k != "bind"})
    for spec in service.get("tmpfs") or []:
        volumes.append(_tmpfs_mount(spec))
    if service.get("shm_size"):
        size = int(service["shm_size"])
        shm = "/dev/shm"  # noqa: S108 - the container's own shared memory, as shm_size sizes it
        volumes.append({"type": "tmpfs", "target": shm, "tmpfs": {"size": size}})
    if volumes:
        out["volumes"] = volumes
    else:
        out.pop("volumes", None)
    return out


def _network(net: Json) -> Json:
    """Stack-namespaced (no `name`); of its address plan, Swarm takes the subnet only."""
    out = {k: v for k, v in net.items() if k != "name"}
    if out.get("ipam"):
        ipam = {
            **out["ipam"],
            "config": [{"subnet": c["subnet"]} for c in out["ipam"].get("config", [])],
        }
        out["ipam"] = {k: v for k, v in ipam.items() if v}
    if not out.get("ipam"):
        out.pop("ipam", None)
    return out


def _named_volumes(service: Json) -> set[str]:
    return {v["source"] for v in service.get("volumes") or [] if v.get("type") == "volume"}


def colocate(services: dict[str, Json]) -> dict[str, Json]:
    """A named volume lives on one node: a service that mounts a volume of a pinned service (the
    backups beside the database) is pinned with it, unless it is placed already."""
    pinned = {
        volume: constraints
        for service in services.values()
        if (
            constraints := ((service.get("deploy") or {}).get("placement") or {}).get("constraints")
        )
        for volume in _named_volumes(service)
    }
    out = {}
    for name, service in services.items():
        deploy = service.get("deploy") or {}
        shared = [pinned[v] for v in sorted(_named_volumes(service)) if v in pinned]
        if shared and not (deploy.get("placement") or {}).get("constraints"):
            placement = {**(deploy.get("placement") or {}), "constraints": shared[0]}
            service = {**service, "deploy": {**deploy, "placement": placement}}
        out[name] = service
    return out


def built_images(config: Json) -> list[str]:
    """The images the compose files build (the kit's own): what every node must be given."""
    return sorted({s["image"] for s in config["services"].values() if s.get("build")})


def render(
    config: Json,
    *,
    stack: str,
    release: str | None = None,
    phase: str = "all",
    relocate: dict[str, str] | None = None,
    read: Callable[[str], bytes] = lambda p: Path(p).read_bytes(),
    is_dir: Callable[[str], bool] = lambda p: Path(p).is_dir(),
    list_dir: Callable[[str], list[str]] = lambda p: [f.name for f in Path(p).iterdir()],
) -> Json:
    relocate = relocate or {}
    services = config["services"]
    flags = config.get("x-swarm-flags") or {}
    unknown = set(flags) - set(services)
    if unknown:
        raise ValueError(f"x-swarm-flags names no such service: {sorted(unknown)}")
    configs: dict[str, Json] = {}
    services = colocate(services)
    out_services = {
        name: render_service(
            name,
            services[name],
            flags=flags.get(name),
            release=release,
            configs=configs,
            relocate=relocate,
            is_dir=is_dir,
            list_dir=list_dir,
            read=read,
            stack=stack,
        )
        for name in select(services, phase)
    }

    def used(key: str) -> set[str]:
        names: set[str] = set()
        for service in out_services.values():
            for item in service.get(key) or []:
                names.add(item if isinstance(item, str) else item.get("source", ""))
        return names

    networks = set().union(*((s.get("networks") or {}).keys() for s in out_services.values()))
    stack_file: Json = {"services": out_services}
    stack_file["networks"] = {
        name: _network(net)
        for name, net in (config.get("networks") or {}).items()
        if name in networks
    }
    named_volumes = {
        v["source"]
        for s in out_services.values()
        for v in s.get("volumes", [])
        if v.get("type") == "volume"
    }
    stack_file["volumes"] = {
        name: {k: v for k, v in (vol or {}).items() if k != "name"}
        for name, vol in (config.get("volumes") or {}).items()
        if name in named_volumes
    }
    secrets: Json = {}
    for name in sorted(used("secrets")):
        secret = config["secrets"][name]
        if "file" not in secret:
            secrets[name] = secret
            continue
        secrets[name] = {
            "name": f"{stack}_{name}_{_version(read(secret['file']))}",
            "file": _relocated(secret["file"], relocate),
        }
    if secrets:
        stack_file["secrets"] = secrets
    if configs:
        stack_file["configs"] = configs
    return stack_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--release")
    parser.add_argument("--phase", choices=["all", "needs", "jobs", "services"], default="all")
    parser.add_argument("--names", action="store_true", help="print the phase's services only")
    parser.add_argument("--images", action="store_true", help="print the images built here only")
    parser.add_argument("--relocate", action="append", default=[], metavar="LOCAL=REMOTE")
    args = parser.parse_args(argv)
    relocate = dict(item.split("=", 1) for item in args.relocate)
    config = json.load(sys.stdin)
    if args.images:
        print("\n".join(built_images(config)))
        return 0
    try:
        stack_file = render(
            config,
            stack=args.stack,
            release=args.release,
            phase=args.phase,
            relocate=relocate,
        )
    except (ValueError, KeyError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    if args.names:
        for name in stack_file["services"]:
            print(name)
        return 0
    json.dump(stack_file, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
