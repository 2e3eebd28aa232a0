"""The JSON schemas the static tests validate the kit's files against, copied unchanged from
their public sources into the repository (README.md here names each one's source and date), so a
clone anywhere runs those tests."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft7Validator
from referencing import Registry

SCHEMAS = Path(__file__).resolve().parent


def schema(name: str, registry: Registry | None = None) -> Draft7Validator:
    """Draft 7 by name, not by `validator_for`: the compose schema's `$schema` URL is not one it
    recognises (and every schema here is draft 7). registry: the schemas it refers to, if any."""
    return Draft7Validator(
        json.loads((SCHEMAS / name).read_text()), registry=registry or Registry()
    )
