"""Tables. Their schema changes only through Alembic migrations (api/migrations)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    # INSERT/UPDATE ... RETURNING brings back created_at/updated_at: no refresh round trip.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's own convention

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


# Stored as the member's value in a VARCHAR(16), as before the column was typed: no native
# PostgreSQL enum and no CHECK constraint, so the schema (migration 0001) is unchanged and a new
# state needs no migration. A string that is not a state is refused before it reaches the database.
_JOB_STATE = Enum(
    JobState,
    native_enum=False,
    length=16,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
)


class Job(Base):
    __tablename__ = "jobs"
    # The reaper's query (worker/reaper.py) looks only at running jobs: a small index, however many
    # finished jobs the table keeps.
    __table_args__ = (
        Index(
            "ix_jobs_running_heartbeat", "heartbeat_at", postgresql_where=text("state = 'running'")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    state: Mapped[JobState] = mapped_column(_JOB_STATE, default=JobState.queued)
    cost: Mapped[int] = mapped_column(Integer)
    seed: Mapped[str] = mapped_column(String(200))
    result: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The lease of a running job: who runs it (worker/lease.py's holder id) and when it last said
    # so. NULL on jobs that never ran.
    worker: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The W3C traceparent of the request that queued it (tracing on): the reaper's new message
    # for it carries this, so a run after a lost worker stays in that request's trace.
    traceparent: Mapped[str | None] = mapped_column(String(55))


class CacheDebt(Base):
    """An item whose cached copy must be deleted before any process reads the cache again: its
    write committed while Redis was unreachable (api/cache_debts.py)."""

    __tablename__ = "cache_debts"

    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RunStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


_RUN_STATUS = Enum(
    RunStatus,
    native_enum=False,
    length=16,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
)


class ScheduleRun(Base):
    """One tick of a schedule, claimed by the worker process that runs it (worker/claims.py).
    The primary key is what makes a tick run once: a second claim of it inserts nothing."""

    __tablename__ = "schedule_runs"
    # The reaper looks only at running claims (worker/reaper.py), as it does for jobs.
    __table_args__ = (
        Index(
            "ix_schedule_runs_running_heartbeat",
            "heartbeat_at",
            postgresql_where=text("status = 'running'"),
        ),
    )

    schedule: Mapped[str] = mapped_column(String(100), primary_key=True)
    tick: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    status: Mapped[RunStatus] = mapped_column(_RUN_STATUS, default=RunStatus.running)
    # The claim's lease, as a job's (worker/lease.py): its holder and when it last said so.
    worker: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class JobCountSnapshot(Base):
    """The jobs' counts by state at one tick of snapshot-job-counts: the job exporter serves the
    newest instead of counting the whole table at every scrape. No key of its own on tick: the
    claim is what keeps one row a tick, and the tests count these rows to prove it."""

    __tablename__ = "job_count_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tick: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    queued: Mapped[int] = mapped_column(BigInteger)
    running: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
