"""`python -m api.migration_lint [FOLDER]`: make lint's check of the migrations (default
api/migrations), before any reaches a database. Each revision's upgrade is rendered as the SQL
Alembic writes offline (`alembic upgrade --sql`: no database), with the migrate step's timeouts,
and squawk (the squawk-cli dev dependency, rules in .squawk.toml) reads it: a NOT NULL column
without a default, a dropped or renamed column or table (the previous release still reads it), an
index built without CONCURRENTLY on a table the migration did not create, and the like.

A migration accepts a rule on purpose with a reason, in a module-level dict:

    lint_accepts = {"require-concurrent-index-creation": "jobs is small: one second per 1M rows"}

which becomes squawk's own `-- squawk-ignore-file <rule>` over that migration's SQL. Not in the
api image's runtime path: it needs the dev dependencies (uv sync).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

ROOT = Path(__file__).resolve().parents[1]
SQUAWK_CONFIG = ROOT / ".squawk.toml"


def squawk() -> str:
    """The squawk binary of this environment (uv run puts it on PATH; a direct venv call not)."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if found is None:
        raise SystemExit("squawk is missing: uv sync (it is a dev dependency, squawk-cli)")
    return found


def accepts(script: Script) -> dict[str, str]:
    """The rules a migration accepts, each with its reason; SystemExit if one has none."""
    given = getattr(script.module, "lint_accepts", {})
    if not isinstance(given, dict) or not all(
        isinstance(rule, str) and isinstance(why, str) and why.strip()
        for rule, why in given.items()
    ):
        raise SystemExit(f"{script.path}: lint_accepts must map each rule to why it is safe here")
    return given


def rendered_sql(config: Config, script: Script) -> str:
    """The SQL `alembic upgrade DOWN:REVISION --sql` writes for this one revision."""
    down = script.down_revision
    start = down[0] if isinstance(down, tuple) else (down or "base")
    config.output_buffer = io.StringIO()
    command.upgrade(config, f"{start}:{script.revision}", sql=True)
    return config.output_buffer.getvalue()


def lint(folder: Path) -> int:
    """squawk over every revision's SQL in folder; its exit status (0: all clean)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    # A terminal gets squawk's annotated snippets, in colour; a log its one line per problem.
    reporter = "tty" if sys.stderr.isatty() else "gcc"
    status = 0
    for script in ScriptDirectory.from_config(config).walk_revisions():
        ignores = "".join(f"-- squawk-ignore-file {rule}\n" for rule in accepts(script))
        name = (
            Path(script.path).relative_to(ROOT)
            if Path(script.path).is_relative_to(ROOT)
            else script.path
        )
        where = ["--stdin-filepath", f"{name} (its SQL)"]
        proc = subprocess.run(  # noqa: S603 - our own binary, our own arguments
            [squawk(), "--config", str(SQUAWK_CONFIG), "--reporter", reporter, *where],
            input=ignores + rendered_sql(config, script),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            status = 1
            print(proc.stdout + proc.stderr, file=sys.stderr)
    if status:
        print(
            "migration lint: unsafe forms above (docs/deploy.md, Migrations); to accept one on "
            "purpose, lint_accepts = {rule: why} in that migration",
            file=sys.stderr,
        )
    return status


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "api" / "migrations"
    raise SystemExit(lint(folder.resolve()))


if __name__ == "__main__":
    main()
