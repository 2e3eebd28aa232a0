"""The SSH server the deploy and Swarm tests deploy to."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy import SSH_PORT
from tests.support.stack import run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sshd on 127.0.0.1:SSH_PORT accepting one generated key, for root on this machine."""
    home = tmp_path_factory.mktemp("sshd")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "host_key")])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "client_key")])
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    config = home / "sshd_config"
    config.write_text(
        f"Port {SSH_PORT}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {home / 'sshd.pid'}\n"
        "MaxSessions 50\nMaxStartups 50\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    daemon = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
    time.sleep(0.5)
    assert daemon.poll() is None, "sshd did not start"
    yield home
    daemon.terminate()
    daemon.wait(timeout=10)
