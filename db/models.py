"""The store's schema (SQLAlchemy 2 typed models), dialect-neutral: SQLite by default, PostgreSQL works too.

Every change to these classes needs an Alembic migration in db/migrations/versions; a test compares
the migrated schema with this metadata so the two cannot drift apart.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, MetaData, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Explicit constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "pk": "pk_%(table_name)s"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: use timezone-aware UTC (db.models.utcnow())")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RunStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.completed, RunStatus.failed, RunStatus.cancelled)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    algorithm: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[RunStatus] = mapped_column(Enum(RunStatus, name="run_status", native_enum=False, length=16),
                                              default=RunStatus.queued, index=True)
    config_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(120))
    pid: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    last_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    # Lower runs first; ties by id, so the queue is first-in first-out unless a user reorders it.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when a run is re-queued after an interruption: the run process restarts from its last checkpoint.
    resume: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The current claim's owner token, new on every claim and cleared when the claim ends. Every write of a
    # run process checks it in the same transaction, so a process whose run was recovered, re-claimed,
    # cancelled or deleted behind its back (a stopped or orphaned process) can never write again.
    lease: Mapped[str | None] = mapped_column(String(64))
    # Part of the run's folder name (runs/<id>-<token>), set at submit: SQLite reuses the id of a deleted
    # last run, and a new run must never inherit an old one's checkpoints. NULL on rows from before it.
    folder_token: Mapped[str | None] = mapped_column(String(32))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    # Its owner's labels and free text (the app's Run page writes them, the Runs page searches them).
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    notes: Mapped[str | None] = mapped_column(Text)

    parent: Mapped["Run | None"] = relationship(remote_side="Run.id")

    __table_args__ = (Index("ix_runs_queue", "status", "priority", "id"),)


class MetricPoint(Base):
    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(160))
    value: Mapped[float | None] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # (run, key, step) is unique and serves "series since step N"; the covering index adds the value so chart
    # reads (downsampling included) never touch the table itself.
    __table_args__ = (UniqueConstraint("run_id", "key", "step", name="uq_metric_points_run_key_step"),
                      Index("ix_metric_points_series", "run_id", "key", "step", "value"))


class GroupStat(Base):
    __tablename__ = "group_stats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(160))
    weight: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    reward_mean: Mapped[float | None] = mapped_column(Float)
    reward_std: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("run_id", "step", "group", name="uq_group_stats_run_step_group"),
                      Index("ix_group_stats_series", "run_id", "group", "step"))


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(160))
    prompt: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    reward: Mapped[float | None] = mapped_column(Float)
    rewards: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # one entry per reward function
    advantage: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_samples_run_step", "run_id", "step"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int | None] = mapped_column(Integer)  # training step for in-run evaluation hooks
    model: Mapped[str] = mapped_column(Text)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    benchmark: Mapped[str] = mapped_column(String(80))
    dataset_version: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What was evaluated, whoever ran it (run_id above is the row's owner: the training run for its own held-out
    # evaluations, the eval job for a queued one, the evaluated run for `studio eval run:ID`). evaluated_model is
    # the base model id (for a run checkpoint, the run's base model), evaluated_run_id / evaluated_step the run and
    # checkpoint step whose weights were scored (step 0 = before training; NULL run = the base model itself),
    # model_path the folder that was loaded (CLI and queued evaluations), source "run" | "job" | "cli".
    # NULL on rows from before these columns (app/eval_view.py infers what it can for them).
    evaluated_model: Mapped[str | None] = mapped_column(Text)
    evaluated_run_id: Mapped[int | None] = mapped_column(Integer)
    evaluated_step: Mapped[int | None] = mapped_column(Integer)
    model_path: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(16))


class ComparisonOutput(Base):
    """One answer of one model to one prompt, written by a compare job."""

    __tablename__ = "comparison_outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    prompt_index: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(160))
    prompt: Mapped[str] = mapped_column(Text)
    side: Mapped[str] = mapped_column(String(1))  # "a" or "b"
    model: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    reward: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("run_id", "prompt_index", "side", name="uq_comparison_outputs_run_prompt_side"),)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class Worker(Base):
    """A live engine process; its heartbeat is the engine's health signal."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
