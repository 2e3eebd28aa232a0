"""The repository's own tooling, checked without running it: the schemas the static tests use
(tests/schemas) are the ones their README names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda path: path.name)
def test_every_schema_names_its_source_and_is_the_file_it_names(path):
    rows = {
        row[0].strip("` "): row
        for row in (
            line.strip("|").split("|")
            for line in (SCHEMAS / "README.md").read_text().splitlines()
            if line.startswith("| `")
        )
    }
    assert path.name in rows, f"{path.name} has no row in tests/schemas/README.md"
    _, _, source, version, digest = (cell.strip() for cell in rows[path.name])
    assert re.fullmatch(r"<https://github\.com/[^>]+>", source)
    assert version
    assert digest.strip("`") == hashlib.sha256(path.read_bytes()).hexdigest(), "changed since"
