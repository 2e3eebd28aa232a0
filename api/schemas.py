"""Request and response bodies. Validation errors become 422 with the failing field named."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.models import JobState

# Limits the OpenAPI document declares, so a client learns them from the schema and a request over
# them gets the same 422 validation array as any other invalid field.
PAGE_SIZE_MAX = 100
JOB_MAX_COST = 20_000_000


def _storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate ("\\ud800" is
    valid JSON): refused here as a 422 naming the field, not a 500 from the database driver."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


# The NUL rule in the OpenAPI document too, so clients and schema-driven tests know it (a lone
# surrogate is not a Unicode string, which JSON Schema's "string" already means). Validation
# stays in _storable, whose messages say what is wrong.
STORABLE_PATTERN = r"^[^\x00]*$"

# Every string the app stores goes through this.
StorableText = Annotated[
    str, AfterValidator(_storable), Field(json_schema_extra={"pattern": STORABLE_PATTERN})
]


class ErrorOut(BaseModel):
    """Every error but a 422 (whose detail is the list of invalid fields)."""

    detail: str


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: StorableText = Field(min_length=1, max_length=200)
    description: StorableText | None = Field(default=None, max_length=10_000)
    price_cents: int = Field(default=0, ge=0, le=10**12)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    price_cents: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: int | None = Field(
        description="Pass as ?after= to get the next page; null on the last page."
    )


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cost: int = Field(
        ge=1, le=JOB_MAX_COST, description="Rounds of SHA-256: the job's CPU cost, linear."
    )
    seed: StorableText = Field(default="", max_length=200)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    state: JobState
    cost: int
    seed: str
    result: str | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
