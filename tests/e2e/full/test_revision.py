"""make revision against the running stack, as a developer runs it: Alembic autogenerates in the
migrate image (the database is on the app's internal network only), with this checkout's models
and migrations mounted, and the new file belongs to whoever ran make."""

from __future__ import annotations

import os
import re

from api.readiness import head_revision
from tests.support import ROOT

VERSIONS = ROOT / "api" / "migrations" / "versions"
MESSAGE = "kit e2e revision check"


def body(source: str, function: str) -> list[str]:
    """The statements of a generated function, without Alembic's comments."""
    match = re.search(rf"^def {function}\(\) -> None:\n(.*?)(?=^\S|\Z)", source, re.M | re.S)
    assert match, source
    lines = (line.strip() for line in match.group(1).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_make_revision_autogenerates_in_the_stack_as_the_caller(stack):
    head = head_revision()
    before = set(VERSIONS.glob("*.py"))
    try:
        made = stack.make("revision", f"MESSAGE={MESSAGE}")
        new = sorted(set(VERSIONS.glob("*.py")) - before)
        assert len(new) == 1, f"{made.stdout}\n{made.stderr}"
        revision = new[0]
        assert revision.name.endswith("_kit_e2e_revision_check.py")
        source = revision.read_text()
        assert source.startswith(f'"""{MESSAGE}\n')
        assert f"down_revision: str | None = {head!r}" in source
        # The models and the migrations agree: nothing to do either way.
        assert body(source, "upgrade") == ["pass"], source
        assert body(source, "downgrade") == ["pass"], source
        # Written as the caller, not as the image's user (10001).
        assert (revision.stat().st_uid, revision.stat().st_gid) == (os.getuid(), os.getgid())
    finally:
        for path in set(VERSIONS.glob("*.py")) - before:
            path.unlink()
