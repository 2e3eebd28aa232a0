"""The production overlay's boundaries, checked on real containers: `docker compose -f compose.yaml
-f compose.prod.yaml up` with secret files, as an operator runs it (docs/production.md, "Threat
model").

Each test names the boundary it proves. The stack is brought up once for the module, with its
own project, ports and edge network; the Let's Encrypt directory is a closed loopback port, and a
self-signed certificate for api.localhost stands in for the one it would issue (sniStrict refuses
any name without a certificate).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.support import stack as stack_module
from tests.support.compose_config import SECRETS_BY_SERVICE, write_secret_files
from tests.support.stack import Stack, run, wait_until

# Overridable, so a second copy of this test can run beside another on one engine.
HTTPS_PORT = int(os.environ.get("KIT_SEC_TEST_HTTPS_PORT", "48443"))
HTTP_PORT = HTTPS_PORT - 363
DOMAIN = "api.localhost"
PROJECT = os.environ.get("KIT_SEC_TEST_PROJECT", "kit-sec")
# Capabilities a service may be given back, and why (compose.prod.yaml): the db and redis
# entrypoints take their data directories and drop to their users; proxy-certs chowns once.
ALLOWED_CAP_ADD = {
    "db": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
    "redis": {"CHOWN", "SETGID", "SETUID"},
    "proxy-certs": {"CHOWN"},
}
# Services whose main process runs as root, and why: the socket proxy opens the root-owned Docker
# socket (with no capability). Everything else is another user once started.
ROOT_BY_DESIGN = {"socket-proxy"}
PRIVATE_PATHS = ("/metrics", "/whoami", "/openapi.json", "/docs", "/redoc")


def _proxy_config(directory: Path) -> None:
    """The kit's dynamic files plus a certificate for DOMAIN, readable by the proxy's user."""
    shutil.copytree(ROOT / "proxy" / "dynamic", directory)
    run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN}",
        "-keyout", str(directory / "test.key"), "-out", str(directory / "test.crt"),
    ])  # fmt: skip
    (directory / "test-certificate.yml").write_text(
        "tls:\n  certificates:\n"
        "    - certFile: /etc/traefik/dynamic/test.crt\n"
        "      keyFile: /etc/traefik/dynamic/test.key\n"
    )
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Iterator[tuple[Stack, dict[str, str]]]:
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )
    root = tmp_path_factory.mktemp("production")
    values = write_secret_files(root / "secrets")
    _proxy_config(root / "dynamic")
    prod = Stack(
        project=PROJECT,
        files=("compose.yaml", "compose.prod.yaml"),
        with_proxy=True,
        env={
            "API_DOMAIN": DOMAIN,
            "ACME_EMAIL": "ops@example.com",
            # Nothing leaves this machine: the ACME directory is a closed loopback port.
            "ACME_CA_SERVER": "https://127.0.0.1:9/directory",
            "SECRETS_DIR": str(root / "secrets"),
            "PROXY_DYNAMIC_DIR": str(root / "dynamic"),
            "HTTP_PORT": str(HTTP_PORT),
            "HTTPS_PORT": str(HTTPS_PORT),
            "API_REPLICAS": "1",
            # The app's line for every request: what it believed about the client and scheme
            # (test_spoofed_forwarded_headers_are_not_believed).
            "ACCESS_LOG": "all",
        },
    )
    try:
        prod.up("backup")
        # Healthy is not yet routed: Traefik adds the api at its next active health check.
        wait_until(lambda: _https("/health").status_code == 200, within=60)
        yield prod, values
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            prod.down()


@pytest.fixture(scope="module")
def containers(production) -> dict[str, dict]:
    """Every container of the stack (one-shots included), by service: its `docker inspect`."""
    stack, _ = production
    ids = stack.compose("ps", "-a", "-q").stdout.split()
    found = {}
    for info in json.loads(run(["docker", "inspect", *ids]).stdout):
        found[info["Config"]["Labels"]["com.docker.compose.service"]] = info
    assert {
        "proxy",
        "socket-proxy",
        "proxy-certs",
        "api",
        "worker",
        "migrate",
        "db",
        "redis",
        "backup",
    } <= set(found)
    return found


def _https(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A request to the published port on loopback, naming DOMAIN in SNI and Host."""
    with httpx.Client(verify=False, timeout=10) as client:
        return client.get(
            f"https://127.0.0.1:{HTTPS_PORT}{path}",
            headers={"Host": DOMAIN, **(headers or {})},
            extensions={"sni_hostname": DOMAIN},
        )


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


# ------------------------------------------------------------------ containers and privileges --


def test_no_long_running_process_is_root_or_holds_a_capability(containers):
    """Effective user and capabilities of each container's main process, read from the host's
    /proc: the entrypoints of db and redis start as root and must have dropped both."""
    for service, info in containers.items():
        if not info["State"]["Running"]:
            continue  # one-shots (migrate, proxy-certs) have exited
        pid = info["State"]["Pid"]
        if info["HostConfig"].get("Init"):
            # Docker's init (the db's: it reaps pgBackRest's orphans) only waits on its child:
            # the service is that child.
            pid = _children(pid)[0]
        status = _process_status(pid)
        effective_uid = int(status["Uid"].split()[1])
        if service in ROOT_BY_DESIGN:
            assert effective_uid == 0, service
        else:
            assert effective_uid != 0, f"{service} runs as root"
        assert int(status["CapEff"], 16) == 0, f"{service} holds capabilities {status['CapEff']}"


def test_read_only_root_no_new_privileges_minimal_capabilities_and_pids_limit(containers):
    for service, info in containers.items():
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["CapDrop"] == ["ALL"], service
        added = {cap.removeprefix("CAP_") for cap in host["CapAdd"] or ()}
        assert added <= ALLOWED_CAP_ADD.get(service, set()), service
        assert host["PidsLimit"] and host["PidsLimit"] > 0, service


def test_only_the_socket_proxy_has_the_docker_socket(containers):
    holders = {
        service
        for service, info in containers.items()
        if any(m["Source"] == "/var/run/docker.sock" for m in info["Mounts"])
    }
    assert holders == {"socket-proxy"}


def _on_network(stack: Stack, network: str, code: str) -> str:
    """Python run in a throwaway container of the api image, attached to one of the stack's
    networks: what a process there (a compromised proxy, say) could reach."""
    image = stack.inspect(stack.container_ids("api")[0])["Config"]["Image"]
    return run([
        "docker", "run", "--rm", "--network", f"{stack.project}_{network}", "--entrypoint",
        "python", image, "-c", code,
    ]).stdout  # fmt: skip


SOCKET_PROXY_PROBE = """
import http.client, json
def call(method, path, body=None):
    c = http.client.HTTPConnection("socket-proxy", 2375, timeout=10)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    return c.getresponse().status
print(json.dumps({
    "version": call("GET", "/v1.41/version"),
    "list": call("GET", "/v1.41/containers/json"),
    "create": call("POST", "/v1.41/containers/create", json.dumps({"Image": "redis:7"})),
    "exec": call("POST", "/v1.41/containers/x/exec", "{}"),
    "delete": call("DELETE", "/v1.41/containers/x"),
    "images": call("GET", "/v1.41/images/json"),
    "secrets": call("GET", "/v1.41/secrets"),
    "archive": call("GET", "/v1.41/containers/x/archive?path=/run/secrets"),
}))
"""


def test_the_socket_proxy_passes_reads_and_refuses_everything_else(production):
    stack, _ = production
    seen = json.loads(_on_network(stack, "socket", SOCKET_PROXY_PROBE))
    assert seen["version"] == 200 and seen["list"] == 200, seen
    refused = {k: v for k, v in seen.items() if k not in ("version", "list")}
    assert set(refused.values()) == {403}, seen


def test_traefik_discovers_the_api_through_the_socket_proxy(production):
    response = _https("/health")
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------- the database --

ROLE_PROBE = """
import psycopg
from core.settings import get_settings
s = get_settings()
url = s.database_url_sync.replace("+psycopg", "")
print("user", s.postgres_user)
for statement in ("CREATE TABLE stolen (x int)", "COPY (SELECT 1) TO PROGRAM 'id'",
                  "DROP TABLE items", "SELECT pg_read_file('/etc/passwd')"):
    with psycopg.connect(url, autocommit=True) as c:
        try:
            c.execute(statement)
            print("ALLOWED", statement)
        except psycopg.Error as e:
            print("refused", type(e).__name__)
with psycopg.connect(url, autocommit=True) as c:
    query = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    print("super", c.execute(query).fetchone()[0])
"""


def test_the_api_connects_as_a_role_without_ddl_or_server_access(production):
    stack, _ = production
    out = stack.exec_python("api", ROLE_PROBE)
    assert "user app_rw" in out
    assert "ALLOWED" not in out, out
    assert out.count("refused") == 4, out
    assert "super False" in out


# ---------------------------------------------------------------------------------- secrets --


def test_no_secret_value_in_inspect_process_list_or_logs(production, containers):
    stack, values = production
    # Every secret was used: the stack is healthy and the api served an authenticated path.
    assert _https("/ready").status_code == 200
    inspected = run(["docker", "inspect", *[c["Id"] for c in containers.values()]]).stdout
    processes = run(["ps", "-eo", "args"], env=None).stdout
    logs = stack.compose("logs", "--no-color").stdout
    for name, value in values.items():
        assert value not in inspected, f"{name} in docker inspect"
        assert value not in processes, f"{name} in the host's process list"
        assert value not in logs, f"{name} in the logs"


def test_each_service_gets_only_its_secrets(containers):
    for service, info in containers.items():
        mounted = {
            Path(m["Destination"]).name
            for m in info["Mounts"]
            if m["Destination"].startswith("/run/secrets/")
        }
        assert mounted == SECRETS_BY_SERVICE.get(service, set()), service


def test_a_short_jwt_secret_stops_the_api_naming_it(production, tmp_path):
    stack, _ = production
    weak = tmp_path / "weak"
    write_secret_files(weak, jwt_secret="short-secret")
    # The api's own command: gunicorn reads the settings before it binds.
    proc = stack.compose(
        "run", "--rm", "--no-deps", "api", check=False, timeout=120, SECRETS_DIR=str(weak)
    )
    assert proc.returncode != 0
    assert "JWT_SECRET is shorter than 32 bytes" in proc.stdout + proc.stderr
    assert "short-secret" not in proc.stdout + proc.stderr


def test_a_missing_secret_file_stops_the_service_naming_it(production, tmp_path):
    stack, _ = production
    partial = tmp_path / "partial"
    write_secret_files(partial)
    (partial / "jwt_secret").unlink()
    proc = stack.compose(
        "run", "--rm", "--no-deps", "api", "true", check=False, SECRETS_DIR=str(partial)
    )
    assert proc.returncode != 0
    assert "jwt_secret" in proc.stdout + proc.stderr


# -------------------------------------------------------------------------------- the edge --


@pytest.mark.parametrize("path", PRIVATE_PATHS)
def test_operations_endpoints_are_not_public(production, path):
    assert _https(path).status_code == 404


def test_prometheus_scrapes_metrics_from_the_backend_network(production):
    stack, _ = production
    out = _on_network(
        stack,
        "backend",
        "import urllib.request as u; r = u.urlopen('http://api:8000/metrics', timeout=10);"
        "print(r.status, b'http_requests_total' in r.read())",
    )
    assert out.split() == ["200", "True"]


def test_ready_answers_status_only_even_when_failing(production):
    stack, _ = production
    body = _https("/ready").json()
    assert body == {
        "status": "ready",
        "failed": [],
        "checks": {"database": "ok", "redis": "ok", "archive": "ok"},
    }
    stack.compose("stop", "redis")
    try:
        failing = wait_until(
            lambda: (r := _https("/ready")).status_code == 503 and r, within=30, every=1
        )
        assert failing.json() == {
            "status": "not ready",
            "failed": ["redis"],
            "checks": {"database": "ok", "redis": "failed", "archive": "ok"},
        }
    finally:
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
    wait_until(lambda: _https("/ready").status_code == 200, within=30, every=1)


def _handshake(server_name: str | None, maximum: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = maximum
    context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                return f"ok {tls.version()}"
        except ssl.SSLError as error:
            return f"refused {error.reason}"


def test_tls_below_1_2_is_refused():
    assert _handshake(DOMAIN, ssl.TLSVersion.TLSv1_2) == "ok TLSv1.2"
    refused = _handshake(DOMAIN, ssl.TLSVersion.TLSv1_1)
    # The server's alert, not this client declining to offer TLS 1.1.
    assert refused == "refused TLSV1_ALERT_PROTOCOL_VERSION", refused


def test_a_name_without_a_certificate_is_refused_at_the_handshake(production):
    assert _handshake(DOMAIN, ssl.TLSVersion.TLSv1_3) == "ok TLSv1.3"
    for name in (None, "127.0.0.1", "other.example.com"):
        assert _handshake(name, ssl.TLSVersion.TLSv1_3).startswith("refused"), name


def test_spoofed_forwarded_headers_are_not_believed(production):
    """From outside through the proxy, and from the host straight to the api over the edge
    network's gateway: only Traefik's own address may set the client."""
    stack, _ = production
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    request_id = uuid.uuid4().hex
    # /ready: logged at info (the health probes only when they fail).
    assert _https("/ready", headers={**spoof, "X-Request-ID": request_id}).status_code == 200
    line = wait_until(
        lambda: next(
            (
                json.loads(text[text.index("{") :])
                for text in stack.logs("api", tail=200).splitlines()
                if request_id in text
            ),
            None,
        ),
        within=10,
    )
    assert line["client"] != "6.6.6.6"
    assert line["scheme"] == "https"  # set by Traefik, believed from its address

    api = stack.container_ids("api")[0]
    address = stack.inspect(api)["NetworkSettings"]["Networks"][f"{stack.project}_edge"][
        "IPAddress"
    ]
    direct = httpx.get(f"http://{address}:8000/whoami", headers=spoof, timeout=10).json()
    edge = json.loads(run(["docker", "network", "inspect", f"{stack.project}_edge"]).stdout)[0]
    gateway = edge["IPAM"]["Config"][0]["Gateway"]
    assert direct["client"] == gateway  # the host, through the bridge's gateway
    assert direct["scheme"] == "http"


def test_the_api_trusts_the_proxy_by_name_and_nothing_else(production, containers):
    """No fixed address: the api looks `proxy` up on the edge network, and what it found is the
    proxy's own address there (its log line), with nothing of the host or another network."""
    stack, _ = production
    env = dict(v.partition("=")[::2] for v in containers["api"]["Config"]["Env"])
    assert env["FORWARDED_ALLOW_NAMES"] == "proxy"
    assert "FORWARDED_ALLOW_IPS" not in env  # empty: not even the container's own loopback
    proxy_address = containers["proxy"]["NetworkSettings"]["Networks"][f"{PROJECT}_edge"][
        "IPAddress"
    ]
    _https("/health")
    trusted = [
        json.loads(text[text.index("{") :])
        for text in stack.logs("api", tail=500).splitlines()
        if "trusted proxy addresses" in text
    ]
    assert trusted and {tuple(line["addresses"]) for line in trusted} == {(proxy_address,)}


def test_http_redirects_to_the_published_https_port(production):
    response = httpx.get(
        f"http://127.0.0.1:{HTTP_PORT}/health", headers={"Host": DOMAIN}, follow_redirects=False
    )
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["location"].startswith(f"https://{DOMAIN}:{HTTPS_PORT}/")


def test_the_test_can_see_a_leak(production):
    """The secret scan's own guard: a value that is in the inspect output is found by it."""
    stack, _ = production
    api = stack.container_ids("api")[0]
    inspected = run(["docker", "inspect", api]).stdout
    assert "FORWARDED_ALLOW_NAMES=proxy" in inspected
