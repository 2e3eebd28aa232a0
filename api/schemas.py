"""Request and response bodies. Validation errors become 422 with the failing field named."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.models import JobState


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
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

    cost: int = Field(ge=1, description="Rounds of SHA-256: the job's CPU cost, linear.")
    seed: str = Field(default="", max_length=200)


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
