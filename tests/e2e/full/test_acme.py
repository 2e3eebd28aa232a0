"""Let's Encrypt through the kit's own production proxy, end to end: the production overlay
(compose.yaml + compose.prod.yaml) with ACME_CA_SERVER pointing at Pebble, Let's Encrypt's test
CA, on the kit's edge network (tests/compose.acme.yaml). Pebble looks API_DOMAIN up in
pebble-challtestsrv, which answers with the proxy's address on that network, and fetches the
HTTP-01 token from the proxy's web entrypoint (port 8000 in its container, what port 80 is
published to): the same path Let's Encrypt takes, validation included. Traefik trusts Pebble's
HTTPS certificate through LEGO_CA_CERTIFICATES, as Traefik documents; the kit's image is the one
production runs.

Three stacks, one after the other: a 90-day certificate (issuance, then restart, down and up, an
acme.json left root-owned by an earlier kit: the same certificate and no new order each time);
certificates that live 21 minutes with ACME_CERTIFICATES_DURATION=1, which Traefik renews from
its once-a-minute check (20 minutes before expiry below 24 h: getCertificateRenewDurations in
Traefik's pkg/provider/acme/provider.go), under steady HTTPS load; and ACME_RESOLVER=
letsencrypt-tls on a host whose port 80 nobody can reach: first the name resolving elsewhere
(the failure is an ERROR line, no certificate in Traefik's metric, refused handshakes), then
the runbook's fix (DNS here, restart the proxy) and a certificate through TLS-ALPN-01 alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support import stack as stack_module
from tests.support.compose_config import write_secret_files
from tests.support.load import cycle, get, steady_load
from tests.support.stack import Stack, wait_until

# Overridable, so a second copy of this test can run beside another on one engine.
HTTPS_PORT = int(os.environ.get("KIT_ACME_TEST_HTTPS_PORT", "49443"))
HTTP_PORT = HTTPS_PORT - 363
PROJECT = os.environ.get("KIT_ACME_TEST_PROJECT", "kit-acme")
# Any name: Pebble resolves it through challtestsrv only, and the test sends it in SNI.
DOMAIN = "api.kit-acme.test"
FILES = ("compose.yaml", "compose.prod.yaml", "tests/compose.acme.yaml")
CA_SERVICES = ("pebble", "challtestsrv")
PEBBLE_IMAGE = "ghcr.io/letsencrypt/pebble:2.10.3"
CHALLTESTSRV_IMAGE = "ghcr.io/letsencrypt/pebble-challtestsrv:2.10.3"
# Pebble's default lifetime (its test configuration's), and the short one: Traefik renews
# certificates that expire within 20 minutes, so a 21-minute one is due 59 s after issuance
# and renewed at the next minute's check.
NINETY_DAYS = 90 * 24 * 3600
SHORT_LIFETIME = 21 * 60
# The first order: the api's health checks, Traefik's discovery, an RSA-4096 key, Pebble's
# random 0-5 s wait before each of its validations.
ISSUE_WITHIN = 180
# Issuance plus two of Traefik's checks (a minute apart) plus the order.
RENEW_WITHIN = 240
ORDER_LINE = "Added order"  # Pebble's log, one line per new order (wfe/wfe.go)
HTTP_VALIDATION = "Attempting to validate w/ HTTP: "  # Pebble's log (va/va.go)
WEB_PORT = 8000  # the proxy's web entrypoint in its container; 8001: nothing listens there

T = TypeVar("T")


def _pebble_config(directory: Path, lifetime: int, http_port: int) -> None:
    """Pebble's own test configuration, but validating on the proxy's entrypoint ports inside
    its container (Pebble dials the resolved address on httpPort for HTTP-01, tlsPort for
    TLS-ALPN-01) and with one profile, so every order gets this lifetime (Pebble picks a random
    profile for an order that names none)."""
    directory.mkdir(mode=0o755)
    config = {
        "pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/test/certs/localhost/cert.pem",
            "privateKey": "/test/certs/localhost/key.pem",
            "httpPort": http_port,
            "tlsPort": 8443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "retryAfter": {"authz": 3, "order": 5},
            "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "kit test", "validityPeriod": lifetime}},
        }
    }
    path = directory / "pebble-config.json"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o644)


@dataclass(frozen=True)
class Served:
    """The certificate a verified handshake got, and when."""

    fingerprint: str  # SHA-256 of the leaf, hex
    not_after: float  # epoch seconds
    names: tuple[str, ...]  # its DNS subjectAltNames
    at: float = field(default_factory=time.time)


@dataclass
class AcmeStack:
    stack: Stack
    root: Path
    timings: dict[str, float] = field(default_factory=dict)
    dns_answer: str = ""  # the address challtestsrv gives for every name

    # ---------------------------------------------------------------------------- compose --

    def up(self, dns_elsewhere: bool = False) -> float:
        """The CA and the proxy first, the DNS answer set to the proxy's address (or, to make
        the challenge fail, challtestsrv's own, where nothing answers the challenge), then the
        rest: Traefik orders as soon as the api's router appears (when the api is healthy), and
        the proxy has no fixed address to give challtestsrv before its container exists.
        Returns the monotonic time `up` began."""
        started = time.monotonic()
        self.stack.compose("up", "-d", "--wait", "--wait-timeout", "120", *CA_SERVICES, "proxy")
        self.timings["ca and proxy"] = time.monotonic() - started
        self.point_dns_at("challtestsrv" if dns_elsewhere else "proxy")
        self.stack.up(*CA_SERVICES, build=False)
        self.timings["whole stack"] = time.monotonic() - started
        return started

    def kit_services(self) -> list[str]:
        names = self.stack.compose("config", "--services").stdout.split()
        return [name for name in names if name not in CA_SERVICES]

    def down_kit(self) -> None:
        """`down` of the kit, volumes kept. The CA is not the kit's: Let's Encrypt stays up when
        a user takes the stack down, so Pebble and its memory of orders do too."""
        services = self.kit_services()
        self.stack.compose("down", "--timeout", "10", *services, check=False)
        left = self.stack.compose("ps", "-a", "-q", *services).stdout.split()
        assert not left, f"containers of the kit left after down: {left}"

    # ------------------------------------------------------------------------ CA and DNS --

    def _port(self, service: str, port: int) -> int:
        return self.stack.published_port(service, port)

    def point_dns_at(self, service: str) -> str:
        container = self.stack.container_ids(service)[0]
        networks = self.stack.inspect(container)["NetworkSettings"]["Networks"]
        address = str(networks[f"{self.stack.project}_edge"]["IPAddress"])
        assert address, f"{service} has no address on the edge network: {networks}"
        url = f"http://127.0.0.1:{self._port('challtestsrv', 8055)}/set-default-ipv4"
        wait_until(lambda: httpx.post(url, json={"ip": address}, timeout=5).is_success, 30)
        self.dns_answer = address
        return address

    @property
    def minica(self) -> Path:
        """The test CA of Pebble's own HTTPS certificate (the ACME and management APIs)."""
        path = self.root / "pebble.minica.pem"
        if not path.exists():
            self.stack.compose("cp", "pebble:/test/certs/pebble.minica.pem", str(path))
        return path

    def pebble_root(self) -> str:
        """The root Pebble issues under, from its management API: Pebble makes a new one each
        time it starts, so this is the only source of truth."""
        url = f"https://127.0.0.1:{self._port('pebble', 15000)}/roots/0"
        context = ssl.create_default_context(cafile=str(self.minica))
        response = wait_until(lambda: httpx.get(url, verify=context, timeout=5), 30)
        response.raise_for_status()
        assert "BEGIN CERTIFICATE" in response.text, response.text[:200]
        return response.text

    def orders(self) -> int:
        logs = self.stack.compose("logs", "--no-color", "pebble").stdout
        return logs.count(ORDER_LINE)

    def proxy_errors(self) -> list[dict[str, Any]]:
        """The proxy's ERROR lines (its log is JSON, compose.yaml's --log.format)."""
        lines = self.stack.compose("logs", "--no-color", "--no-log-prefix", "proxy").stdout
        parsed = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
        return [line for line in parsed if line.get("level") == "error"]

    def certificate_metrics(self) -> dict[str, float]:
        """traefik_tls_certs_not_after by its `sans` label, from the proxy's metrics entrypoint
        (:8082, reached from the api over the edge network as Prometheus reaches it)."""
        text = self.stack.exec_python(
            "api",
            "import urllib.request; "
            "print(urllib.request.urlopen('http://proxy:8082/metrics', timeout=5).read().decode())",
        )
        series: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("traefik_tls_certs_not_after{"):
                labels, value = line.rsplit(" ", 1)
                sans = labels.split('sans="', 1)[1].split('"', 1)[0]
                series[sans] = float(value)
        return series

    # -------------------------------------------------------------------------- the edge --

    def trusting(self, root_pem: str) -> ssl.SSLContext:
        """A client that trusts Pebble's root and nothing else, and checks the host name."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=root_pem)
        return context

    def served(self, root_pem: str) -> Served:
        """A new TLS connection to the published HTTPS port naming DOMAIN; raises ssl.SSLError
        unless the certificate chains to root_pem and names DOMAIN."""
        with (
            socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=10) as raw,
            self.trusting(root_pem).wrap_socket(raw, server_hostname=DOMAIN) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            info: dict[str, Any] = tls.getpeercert()  # type: ignore[assignment]
        assert der is not None
        names = tuple(value for kind, value in info.get("subjectAltName", ()) if kind == "DNS")
        return Served(
            hashlib.sha256(der).hexdigest(), ssl.cert_time_to_seconds(info["notAfter"]), names
        )

    def verified_get(self, root_pem: str, path: str = "/health") -> httpx.Response:
        """An HTTPS request as a browser makes it: the certificate verified, DOMAIN in SNI and
        Host."""
        with httpx.Client(verify=self.trusting(root_pem), timeout=10) as client:
            return client.get(
                f"https://127.0.0.1:{HTTPS_PORT}{path}",
                headers={"Host": DOMAIN},
                extensions={"sni_hostname": DOMAIN},
            )

    # ----------------------------------------------------------------------- diagnostics --

    def diagnosis(self) -> str:
        proxy = self.stack.compose("logs", "--no-color", "proxy", check=False).stdout
        acme = [line for line in proxy.splitlines() if "acme" in line.lower()][-40:]
        pebble = self.stack.logs("pebble", tail=40)
        return "\n--- proxy (ACME lines) ---\n" + "\n".join(acme) + "\n--- pebble ---\n" + pebble

    def wait(self, condition: Callable[[], T], within: float, what: str) -> T:
        """wait_until, failing with the proxy's ACME lines and Pebble's log when it times out."""
        try:
            return wait_until(
                condition, within=within, every=1, retry_on=(httpx.HTTPError, OSError)
            )
        except TimeoutError as error:
            pytest.fail(f"{what} not within {within}s ({error}){self.diagnosis()}", pytrace=False)


def _acme_stack(root: Path, lifetime: int, http_port: int = WEB_PORT, **env: str) -> AcmeStack:
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )
    for image in (PEBBLE_IMAGE, CHALLTESTSRV_IMAGE):
        stack_module.require(stack_module.image_exists(image), image)
    write_secret_files(root / "secrets")
    _pebble_config(root / "acme", lifetime, http_port)
    stack = Stack(
        project=PROJECT,
        files=FILES,
        with_proxy=True,
        env={
            "API_DOMAIN": DOMAIN,
            "ACME_EMAIL": "ops@example.com",
            "ACME_CA_SERVER": "https://pebble:14000/dir",
            "KIT_ACME_DIR": str(root / "acme"),
            "SECRETS_DIR": str(root / "secrets"),
            "HTTP_PORT": str(HTTP_PORT),
            "HTTPS_PORT": str(HTTPS_PORT),
            "API_REPLICAS": "1",
            **env,
        },
    )
    return AcmeStack(stack, root)


def _first_certificate(acme: AcmeStack) -> tuple[str, Served, float]:
    """Up, then the first verified HTTPS answer: Pebble's root, the certificate, and the
    seconds from `up` to that answer."""
    acme.stack.compose("build", timeout=900)  # not part of the time: a cache's business
    started = acme.up()
    root_pem = acme.pebble_root()
    acme.wait(
        lambda: acme.verified_get(root_pem).status_code == 200,
        ISSUE_WITHIN,
        f"a verified HTTPS answer for {DOMAIN}",
    )
    took = time.monotonic() - started
    return root_pem, acme.served(root_pem), took


# ----------------------------------------------------------------- issuance and persistence --


@pytest.fixture(scope="class")
def issued(tmp_path_factory) -> Iterator[tuple[AcmeStack, str, Served]]:
    acme = _acme_stack(tmp_path_factory.mktemp("acme"), NINETY_DAYS)
    try:
        root_pem, first, took = _first_certificate(acme)
        print(
            f"\n[acme] first verified HTTPS answer {took:.1f} s after up "
            f"(CA and proxy up in {acme.timings['ca and proxy']:.1f} s, "
            f"whole stack healthy in {acme.timings['whole stack']:.1f} s)"
        )
        yield acme, root_pem, first
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            acme.stack.down()


class TestIssuanceAndPersistence:
    def test_the_certificate_chains_to_pebbles_root_and_names_the_domain(self, issued):
        acme, _, first = issued
        # served() raised unless the chain ends at Pebble's root and the name matches.
        assert DOMAIN in first.names, first.names
        assert first.not_after > time.time() + 80 * 24 * 3600, "not the 90-day profile"
        assert acme.orders() == 1, acme.diagnosis()
        # What TlsCertificateExpiresSoon and TlsCertificateMissing read (observability/rules/).
        assert acme.certificate_metrics() == {DOMAIN: first.not_after}

    def test_pebble_validated_the_challenge_on_the_proxys_web_entrypoint(self, issued):
        """No shortcut: Pebble resolved the name through challtestsrv and fetched the token from
        the proxy (its log names the URL it validated and the authorization it marked valid)."""
        acme, _, _ = issued
        logs = acme.stack.compose("logs", "--no-color", "pebble").stdout
        fetched = (
            f"Attempting to validate w/ HTTP: http://{DOMAIN}:8000/.well-known/acme-challenge/"
        )
        assert fetched in logs, logs[-3000:]
        assert "set VALID by completed challenge" in logs, logs[-3000:]
        assert "Disabling VA challenge requests" not in logs  # PEBBLE_VA_ALWAYS_VALID

    def test_a_restart_of_the_proxy_keeps_the_certificate(self, issued):
        acme, root_pem, first = issued
        orders = acme.orders()
        acme.stack.compose("restart", "proxy")
        acme.stack.wait_healthy("proxy")
        again = acme.wait(lambda: acme.served(root_pem), 60, "a verified handshake after restart")
        assert again.fingerprint == first.fingerprint, "a new certificate after a restart"
        assert acme.orders() == orders, "Pebble saw a new order" + acme.diagnosis()

    def test_down_and_up_keep_the_certificate(self, issued):
        acme, root_pem, first = issued
        orders = acme.orders()
        acme.down_kit()
        acme.up()
        again = acme.wait(lambda: acme.served(root_pem), 60, "a verified handshake after up")
        assert again.fingerprint == first.fingerprint, "a new certificate after down and up"
        # The certificate is served from the start; the api's route comes at Traefik's next look.
        acme.wait(
            lambda: acme.verified_get(root_pem).status_code == 200, 60, "the api answering again"
        )
        assert acme.orders() == orders, "Pebble saw a new order" + acme.diagnosis()

    def test_a_root_owned_acme_json_from_an_earlier_kit_is_taken_over(self, issued):
        """An earlier kit ran Traefik as root: its acme.json is root's, mode 600, unreadable by
        today's uid 65532 until proxy-certs hands the volume over at up."""
        acme, root_pem, first = issued
        orders = acme.orders()
        acme.down_kit()
        one_shot = ("run", "--rm", "--no-deps", "--entrypoint")
        acme.stack.compose(*one_shot, "chown", "proxy-certs", "-R", "0:0", "/letsencrypt")
        owner = ("proxy-certs", "-c", "%u:%g %a", "/letsencrypt/acme.json")
        assert acme.stack.compose(*one_shot, "stat", *owner).stdout.split() == ["0:0", "600"]
        acme.up()
        again = acme.wait(lambda: acme.served(root_pem), 60, "a verified handshake after up")
        assert again.fingerprint == first.fingerprint, "a new certificate after the upgrade"
        assert acme.orders() == orders, "Pebble saw a new order" + acme.diagnosis()
        stat = acme.stack.compose(*one_shot, "stat", *owner).stdout.split()
        assert stat == ["65532:65532", "600"], stat


# ---------------------------------------------------------------------------------- renewal --


@pytest.fixture(scope="class")
def short_lived(tmp_path_factory) -> Iterator[tuple[AcmeStack, str, Served]]:
    acme = _acme_stack(
        tmp_path_factory.mktemp("acme-renewal"), SHORT_LIFETIME, ACME_CERTIFICATES_DURATION="1"
    )
    try:
        root_pem, first, took = _first_certificate(acme)
        print(f"\n[acme] short-lived: first verified HTTPS answer {took:.1f} s after up")
        yield acme, root_pem, first
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            acme.stack.down()


class _Handshakes:
    """New verified TLS connections, one every `every` seconds, from a thread: what each new
    client would be served (a kept-alive connection keeps the certificate of its handshake)."""

    def __init__(self, acme: AcmeStack, root_pem: str, every: float = 0.5) -> None:
        self.acme, self.root_pem, self.every = acme, root_pem, every
        self.seen: list[Served] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append(self.acme.served(self.root_pem))
            except (OSError, AssertionError) as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {error!r}")
            self._stop.wait(self.every)

    def __enter__(self) -> _Handshakes:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


class TestRenewal:
    def test_traefik_renews_before_expiry_under_load_without_a_failed_request(self, short_lived):
        acme, root_pem, first = short_lived
        assert first.not_after < time.time() + SHORT_LIFETIME + 60, "not the short profile"
        proxy = acme.stack.container_ids("proxy")[0]
        started_at = acme.stack.inspect(proxy)["State"]["StartedAt"]
        orders = acme.orders()
        with (
            steady_load(
                f"https://127.0.0.1:{HTTPS_PORT}",
                cycle(get("/health")),
                connections=8,
                rate=40,  # well under the api's rate limit (200/s per client address)
                headers={"Host": DOMAIN},
                sni_hostname=DOMAIN,
                max_seconds=RENEW_WITHIN + 60,
            ) as load,
            _Handshakes(acme, root_pem) as handshakes,
        ):
            renewed = acme.wait(
                lambda: next(
                    (s for s in reversed(handshakes.seen) if s.fingerprint != first.fingerprint),
                    None,
                ),
                RENEW_WITHIN,
                "a renewed certificate served",
            )
            # Load across the switch, and on while new clients get the new certificate.
            acme.wait(
                lambda: sum(s.fingerprint == renewed.fingerprint for s in handshakes.seen) >= 10,
                30,
                "ten handshakes served the renewed certificate",
            )
        print(
            f"\n[acme] renewed {renewed.at - first.at:.0f} s after the first certificate, "
            f"{first.not_after - renewed.at:.0f} s before it expired; {load.summary()}; "
            f"{len(handshakes.seen)} verified handshakes"
        )
        # The switch happened under the load, not before it began.
        assert handshakes.seen[0].fingerprint == first.fingerprint, "renewed before the load"
        assert renewed.at < first.not_after, "renewed only after expiry"
        assert renewed.not_after > first.not_after
        assert DOMAIN in renewed.names, renewed.names
        assert handshakes.failures == [], handshakes.failures[:10]
        assert load.failures() == [], load.summary()
        assert len(load.outcomes) > 100, load.summary()
        assert acme.orders() > orders, "no new order at Pebble" + acme.diagnosis()
        state = acme.stack.inspect(proxy)["State"]
        assert state["StartedAt"] == started_at, "the proxy restarted"
        assert acme.stack.inspect(proxy)["RestartCount"] == 0


# ------------------------------------------------- TLS-ALPN-01, and a failed challenge first --


@pytest.fixture(scope="class")
def port_80_closed(tmp_path_factory) -> Iterator[AcmeStack]:
    """ACME_RESOLVER=letsencrypt-tls, and Pebble validates HTTP-01 on a port where nothing
    listens: a host whose port 80 is closed. DNS answers with the wrong address at first."""
    acme = _acme_stack(
        tmp_path_factory.mktemp("acme-tls-alpn"),
        NINETY_DAYS,
        http_port=WEB_PORT + 1,
        ACME_RESOLVER="letsencrypt-tls",
    )
    try:
        acme.stack.compose("build", timeout=900)
        acme.up(dns_elsewhere=True)
        yield acme
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            acme.stack.down()


class TestTlsAlpnAfterAFailedChallenge:
    def test_a_failed_challenge_is_an_error_line_and_no_certificate(self, port_80_closed):
        acme = port_80_closed
        failed = acme.wait(
            lambda: next(
                (
                    line
                    for line in acme.proxy_errors()
                    if line.get("message", "").startswith("Unable to obtain ACME certificate")
                    and DOMAIN in line.get("domains", [])
                ),
                None,
            ),
            ISSUE_WITHIN,
            "the proxy's ERROR line for the failed order",
        )
        print(f"\n[acme] failed order, the proxy's error: {failed['error'][:300]}")
        # Pebble's wording, as Let's Encrypt's: the address it was given and the challenge.
        expected = f"Failed to connect to {acme.dns_answer}:8443 for the tls-alpn-01 challenge"
        assert expected in failed["error"], failed["error"]
        assert failed.get("providerName") == "letsencrypt-tls.acme", failed
        assert "set INVALID by completed challenge" in acme.stack.logs("pebble", tail=200)
        # No certificate but Traefik's own, which its metric leaves out: TlsCertificateMissing.
        assert acme.certificate_metrics() == {}
        with pytest.raises(ssl.SSLError):  # sniStrict: no certificate for the name, no handshake
            acme.served(acme.pebble_root())

    def test_dns_fixed_and_a_restart_get_the_certificate_through_tls_alpn(self, port_80_closed):
        """The runbook's fix. Port 80 is unreachable for Pebble and challtestsrv holds no TXT
        record, so a valid authorization can only come from TLS-ALPN-01 on port 443."""
        acme = port_80_closed
        acme.point_dns_at("proxy")
        acme.stack.compose("restart", "proxy")
        root_pem = acme.pebble_root()
        acme.wait(
            lambda: acme.verified_get(root_pem).status_code == 200,
            ISSUE_WITHIN,
            f"a verified HTTPS answer for {DOMAIN} after the fix",
        )
        served = acme.served(root_pem)
        assert DOMAIN in served.names, served.names
        logs = acme.stack.compose("logs", "--no-color", "pebble").stdout
        assert "set VALID by completed challenge" in logs, logs[-3000:]
        assert HTTP_VALIDATION not in logs, "Pebble tried HTTP-01" + logs[-3000:]
        assert acme.certificate_metrics() == {DOMAIN: served.not_after}
