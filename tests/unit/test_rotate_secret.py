"""make rotate-secret's steps (deploy/rotate-lib.sh) run by bash with stand-ins for the stack: the
files each step leaves, as the api reads them (core/jwt_keys.py). The e2e test
(tests/e2e/full/test_rotate_secret.py) rotates each secret of a production stack under load."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from core.jwt_keys import JwtKey, parse_keys
from tests.support import ROOT
from tests.support.compose_config import PROD, PROD_SECRETS, clean_env, write_secret_files
from tests.support.shell import bash

LIB = ROOT / "deploy" / "rotate-lib.sh"
RETIRED_SECONDS = 4200
# The stack as the jwt rotation sees it: the api's figure, and a copy of the keyring at each roll.
JWT_STAND_INS = f"""
source {LIB}
stack() {{ [[ $* == "exec -T api python -m api.jwt_retire" ]] && echo {RETIRED_SECONDS}; }}
roll() {{ cp "$FILE" "$FILE.roll$((++ROLLS))"; }}
ROLLS=0 FILE=$1
rotate_jwt_secret "$FILE"
"""


def rotate_jwt(file: Path) -> tuple[list[JwtKey], list[JwtKey], list[JwtKey]]:
    """The keys the api reads at the first roll, at the second, and in the file left."""
    proc = bash(JWT_STAND_INS, str(file))
    assert proc.returncode == 0, proc.stderr
    return tuple(  # type: ignore[return-value]
        parse_keys(path.read_text().removesuffix("\n"))
        for path in (Path(f"{file}.roll1"), Path(f"{file}.roll2"), file)
    )


def test_a_plain_key_becomes_a_keyring_new_key_verifying_first_then_signing(tmp_path):
    file = tmp_path / "jwt_secret"
    file.write_text("the-old-key with spaces ")
    file.chmod(0o444)
    before = int(time.time())
    first, second, left = rotate_jwt(file)
    old = JwtKey("the-old-key with spaces ")
    assert first[0] == old
    assert first[1].until is None
    new = first[1]
    assert len(new.secret) == 64
    assert second[0] == new
    assert second[1].secret == old.secret
    assert before + RETIRED_SECONDS <= second[1].until <= time.time() + RETIRED_SECONDS
    assert left == second
    assert file.stat().st_mode & 0o777 == 0o444


def test_a_second_rotation_keeps_unexpired_retired_keys_and_drops_expired_ones(tmp_path):
    file = tmp_path / "jwt_secret"
    later = int(time.time()) + 600
    file.write_text(
        f"# jwt keyring\ncurrent-key\nuntil={later} still-verifying\nuntil=1000 long-expired\n"
    )
    first, second, _ = rotate_jwt(file)
    assert [k.secret for k in first][::2] == ["current-key", "still-verifying"]
    assert [k.secret for k in second][1:] == ["current-key", "still-verifying"]
    assert second[2].until == later
    assert "long-expired" not in file.read_text()


def test_a_key_of_several_lines_that_is_no_keyring_is_refused(tmp_path):
    file = tmp_path / "jwt_secret"
    file.write_text("line one\nline two\n")
    proc = bash(JWT_STAND_INS, str(file))
    assert proc.returncode != 0
    assert "no keyring" in proc.stderr
    assert file.read_text() == "line one\nline two\n"


# The stack as the postgres rotation sees it: a copy of the file at the roll and at the migrate
# step, which exits with $MIGRATE.
POSTGRES_STAND_INS = f"""
source {LIB}
stack() {{ [[ $* == "run --rm migrate" ]] && cp "$FILE" "$FILE.migrate" && return "$MIGRATE"; }}
roll() {{ [[ $1 == postgres_app_password ]] && cp "$FILE" "$FILE.roll"; }}
FILE=$1 MIGRATE=${{2:-0}}
rotate_postgres_app_password "$FILE"
"""


def rotate_postgres(file: Path, migrate: int = 0) -> subprocess.CompletedProcess[str]:
    return bash(POSTGRES_STAND_INS, str(file), str(migrate))


def _passwords(path: Path) -> list[str]:
    """The lines as core/settings.py reads them: one final newline is not part of the secret."""
    return path.read_text().removesuffix("\n").split("\n")


def test_the_containers_know_both_passwords_before_the_role_changes_then_only_the_new(tmp_path):
    file = tmp_path / "postgres_app_password"
    file.write_text("the-current-password\n")
    file.chmod(0o444)
    proc = rotate_postgres(file)
    assert proc.returncode == 0, proc.stderr
    current, new = _passwords(Path(f"{file}.roll"))
    assert current == "the-current-password"
    assert len(new) == 64
    # The migrate step sets the role's password from a file of one line: the new one.
    assert _passwords(Path(f"{file}.migrate")) == [new]
    assert file.read_text() == new
    assert file.stat().st_mode & 0o777 == 0o444


def test_an_interrupted_rotation_starts_again_from_the_first_line(tmp_path):
    file = tmp_path / "postgres_app_password"
    file.write_text("the-current-password\nan-interrupted-runs-new-one")
    proc = rotate_postgres(file)
    assert proc.returncode == 0, proc.stderr
    current, new = _passwords(Path(f"{file}.roll"))
    assert current == "the-current-password"
    assert new not in ("the-current-password", "an-interrupted-runs-new-one")
    assert file.read_text() == new


def test_a_failed_migrate_step_puts_the_current_password_back_alone(tmp_path):
    file = tmp_path / "postgres_app_password"
    file.write_text("the-current-password")
    proc = rotate_postgres(file, migrate=1)
    assert proc.returncode == 1
    assert "the migrate step failed" in proc.stderr
    assert file.read_text() == "the-current-password"
    assert file.stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize(
    ("answers", "ok"),
    [("OK\nOK\n", True), ("OK\nWRONGPASS invalid username-password pair\n", False)],
)
def test_redis_commands_fail_unless_every_answer_is_ok(answers, ok):
    stand_in = f"stack() {{ cat >/dev/null; printf '{answers}'; }}"
    code = f"source {LIB}\n{stand_in}\necho PING | redis_commands pw"
    proc = bash(code)
    assert (proc.returncode == 0) is ok
    assert ("WRONGPASS" in proc.stderr) is not ok


@pytest.mark.parametrize("name", ["", "postgres_password", "pgbackrest_cipher_pass", "jwt"])
def test_only_the_three_rotatable_secrets_are_rotated(name):
    proc = bash(f'source {LIB}\nstack() {{ echo touched >&2; }}\nrotate "$1"', name)
    assert proc.returncode == 2
    assert "NAME must be one of jwt_secret postgres_app_password redis_password" in proc.stderr
    assert "touched" not in proc.stderr


@pytest.fixture(scope="module")
def prod_config(tmp_path_factory) -> str:
    """`docker compose config` of the production overlay, every profile: what rotate-lib reads."""
    secrets = tmp_path_factory.mktemp("prod") / "secrets"
    write_secret_files(secrets)
    args = ["docker", "compose", "--project-directory", str(ROOT)]
    args += [a for f in PROD for a in ("-f", str(ROOT / f))]
    env = clean_env(**PROD_SECRETS, SECRETS_DIR=str(secrets))
    return subprocess.run(
        [*args, "--profile", "*", "config"], capture_output=True, text=True, env=env, check=True
    ).stdout


@pytest.mark.parametrize(
    ("name", "services"),
    [
        ("jwt_secret", "api"),
        ("postgres_app_password", "api job-exporter migrate worker"),
        ("redis_password", "api job-exporter redis scheduler worker"),
        ("redis_exporter_password_map", "redis-exporter"),
    ],
)
def test_the_secret_file_and_the_services_that_read_it_come_from_compose(
    prod_config, name, services
):
    code = f'source {LIB}\nfile_of_secret "$1" <<<"$2"\nservices_mounting "$1" <<<"$2"'
    proc = bash(code, name, prod_config)
    assert proc.returncode == 0, proc.stderr
    file, *mounting = proc.stdout.split("\n")
    assert file.endswith(f"/secrets/{name}")
    assert " ".join(m for m in mounting if m) == services
