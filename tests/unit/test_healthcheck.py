"""The api HEALTHCHECK finds gunicorn's socket in /proc/net/tcp*, and reaches it."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from api import healthcheck

# Real rows, as Linux prints them in an api container: Docker's DNS resolver (root, on
# 127.0.0.11), gunicorn on every IPv4 address at 8000 (uid 10001), a connection to it.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B00007F:8641 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1
   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001        0 1 1
   2: 0100007F:1F40 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000 10001        0 2 1
"""
APP = 10001


def test_the_apps_listener_on_every_address_is_reached_on_loopback():
    assert healthcheck.listening(TCP, socket.AF_INET, APP) == ("127.0.0.1", 8000)


def test_another_users_listener_is_not_the_app():
    docker_dns_only = "\n".join(TCP.splitlines()[:2])
    assert healthcheck.listening(docker_dns_only, socket.AF_INET, APP) is None


def test_dockers_resolver_is_passed_over_when_the_api_runs_as_root():
    as_root = TCP.replace(" 10001 ", "     0 ")
    assert healthcheck.listening(as_root, socket.AF_INET, 0) == ("127.0.0.1", 8000)


def test_a_listener_on_one_address_is_reached_there():
    row = "   0: 0A1EFA02:1F90 00000000:0000 0A 0:0 00:0 0 10001 0 1 1\n"  # 2.250.30.10:8080
    table = TCP.splitlines()[0] + "\n" + row
    assert healthcheck.listening(table, socket.AF_INET, APP) == ("2.250.30.10", 8080)


def test_ipv6_words_are_decoded():
    loopback = "00000000000000000000000001000000"  # ::1 as the kernel prints it
    table = "header\n   0: " + loopback + ":1F40 " + "0" * 32 + ":0000 0A 0:0 00:0 0 10001 0 1 1\n"
    assert healthcheck.listening(table, socket.AF_INET6, APP) == ("::1", 8000)


def test_no_listener_is_none():
    established_only = TCP.splitlines()[0] + "\n" + TCP.splitlines()[3]
    assert healthcheck.listening(established_only, socket.AF_INET, APP) is None


def test_main_answers_by_the_status_of_health_routable(tmp_path, monkeypatch):
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == "/health/routable" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    table = tmp_path / "tcp"
    header, _, app_row = TCP.splitlines()[:3]  # this test's own user listens, on its port
    app_row = app_row.replace(":1F40", f":{port:04X}", 1).replace(" 10001 ", f" {os.getuid()} ")
    table.write_text(f"{header}\n{app_row}\n")
    monkeypatch.setattr(healthcheck, "TABLES", ((str(table), socket.AF_INET),))
    try:
        assert healthcheck.main() == 0
        status["code"] = 503  # draining
        assert healthcheck.main() == 1
        monkeypatch.setattr(healthcheck, "TABLES", ((str(tmp_path / "absent"), socket.AF_INET),))
        assert healthcheck.main() == 1
    finally:
        server.shutdown()


def test_a_dual_stack_listener_is_reached_on_ipv4_loopback():
    table = "header\n   0: " + "0" * 32 + ":1F40 " + "0" * 32 + ":0000 0A 0:0 00:0 0 10001 0 1 1\n"
    host_port = healthcheck.listening(table, socket.AF_INET6, APP)
    assert host_port == ("127.0.0.1", 8000)
