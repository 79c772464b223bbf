"""The results schema (SQLAlchemy 2.0 ORM).

A *run* is one invocation of ``tslm-fleet run``; a *trial* is one (device, variant, task)
job of a run. Every agent event of a trial is stored once in ``events`` (unique per
``(trial_id, seq)``) and, by type, in the derived tables ``queries``, ``windows``,
``scores`` and ``messages``. Power samples are optional and stored in bulk.

Statuses are enums stored as short strings with a CHECK constraint (no native PostgreSQL
enum types, so migrations stay identical on both backends). Times are UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: constraint names that are the same on every backend (alembic compares them by name)
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class TrialStatus(enum.StrEnum):
    """Lifecycle of one trial."""

    pending = "pending"
    running = "running"
    ok = "ok"
    failed = "failed"
    stopped = "stopped"
    interrupted = "interrupted"


class RunStatus(enum.StrEnum):
    """Lifecycle of one run; ``partial`` means some trials failed and others succeeded."""

    running = "running"
    ok = "ok"
    partial = "partial"
    failed = "failed"
    interrupted = "interrupted"


class MessageLevel(enum.StrEnum):
    """Severity of a stored warning or error event."""

    warning = "warning"
    error = "error"


def utc_now() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base with the shared naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSON,
        float: Double,
        datetime: DateTime(timezone=True),
    }


class Device(Base):
    """A board of the fleet (or the controller itself), keyed by its inventory name."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    host: Mapped[str | None] = mapped_column(String(255))
    board: Mapped[str | None] = mapped_column(String(64))
    transport: Mapped[str | None] = mapped_column(String(32))
    meter_kind: Mapped[str | None] = mapped_column(String(32))
    meter_description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class Artifact(Base):
    """A model variant: the dense model (method ``dense``, ratio 1.0) or a compressed one.

    ``key`` identifies the artifact: its sha256 when it has one, else a hash of the
    manifest, so registering the same artifact twice returns the same row.
    """

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column()
    compression_ratio: Mapped[float | None] = mapped_column()
    #: ratio against the source model's stored format of the table (e.g. Q8_0)
    compression_ratio_source: Mapped[float | None] = mapped_column()
    source_format: Mapped[str | None] = mapped_column(String(32))
    embedding_params: Mapped[int | None] = mapped_column(Integer)
    compressed_params: Mapped[int | None] = mapped_column(Integer)
    total_params: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    reconstruction_error: Mapped[float | None] = mapped_column()
    manifest: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Run(Base):
    """One ``tslm-fleet run``: its resolved configuration and overall status."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.running
    )
    inventory_name: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict[str, Any] | None] = mapped_column()
    tool_version: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column()

    trials: Mapped[list[Trial]] = relationship(back_populates="run")


class Trial(Base):
    """One job of a run: a (device, variant, task), with what the agent reported."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("run_id", "device_id", "variant", "task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    variant: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column()
    status: Mapped[TrialStatus] = mapped_column(
        _enum(TrialStatus, "trial_status"), default=TrialStatus.pending
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column()
    # from the hello event
    job_id: Mapped[str | None] = mapped_column(String(128))
    agent_version: Mapped[str | None] = mapped_column(String(32))
    python_version: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(32))
    transformers_version: Mapped[str | None] = mapped_column(String(32))
    threads: Mapped[int | None] = mapped_column(Integer)
    meter_kind: Mapped[str | None] = mapped_column(String(32))
    meter_description: Mapped[str | None] = mapped_column(Text)
    meter_period_s: Mapped[float | None] = mapped_column()
    # median power of the idle window
    idle_power_w: Mapped[float | None] = mapped_column()
    #: board settings, firmware and meter facts (hello) with what the measurement found
    #: (done): lag, fresh samples, the meter family's error bound
    provenance: Mapped[dict[str, Any] | None] = mapped_column()
    #: the stable-start wait and the idle drift after the queries
    stability: Mapped[dict[str, Any] | None] = mapped_column()
    # from the done event: the agent process's peak resident set over the trial ("job")
    # or since the process started ("process"), and the median decode time per token
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    peak_rss_scope: Mapped[str | None] = mapped_column(String(16))
    decode_s_per_token: Mapped[float | None] = mapped_column()

    run: Mapped[Run] = relationship(back_populates="trials")
    device: Mapped[Device] = relationship()
    artifact: Mapped[Artifact | None] = relationship()


class EventRecord(Base):
    """Every event of a trial exactly once, as received (``data`` holds the type's fields)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))
    t: Mapped[float] = mapped_column()
    wall: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any] | None] = mapped_column()


class Query(Base):
    """One finished query with its timing and energy."""

    __tablename__ = "queries"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(64))
    rep: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    t_start: Mapped[float] = mapped_column()
    t_end: Mapped[float] = mapped_column()
    latency_s: Mapped[float] = mapped_column()
    ttft_s: Mapped[float | None] = mapped_column()
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    tokens_per_s: Mapped[float | None] = mapped_column()
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    energy_j: Mapped[float | None] = mapped_column()
    net_energy_j: Mapped[float | None] = mapped_column()
    samples: Mapped[int] = mapped_column(Integer)
    fresh_samples: Mapped[int] = mapped_column(Integer)
    under_resolved: Mapped[bool] = mapped_column(Boolean)
    throttled: Mapped[bool | None] = mapped_column(Boolean)
    temp_c: Mapped[float | None] = mapped_column()
    #: tokens after the first (the decode phase); prefill's tokens are prompt_tokens
    decode_tokens: Mapped[int | None] = mapped_column(Integer)
    prefill_energy_j: Mapped[float | None] = mapped_column()
    decode_energy_j: Mapped[float | None] = mapped_column()
    prefill_fresh_samples: Mapped[int | None] = mapped_column(Integer)
    decode_fresh_samples: Mapped[int | None] = mapped_column(Integer)


class Window(Base):
    """Energy over a window: ``load``, ``idle`` or back-to-back ``queries``."""

    __tablename__ = "windows"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    task: Mapped[str | None] = mapped_column(String(64))
    rep: Mapped[int | None] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    t_start: Mapped[float] = mapped_column()
    t_end: Mapped[float] = mapped_column()
    duration_s: Mapped[float] = mapped_column()
    queries: Mapped[int] = mapped_column(Integer)
    energy_j: Mapped[float | None] = mapped_column()
    net_energy_j: Mapped[float | None] = mapped_column()
    energy_j_per_query: Mapped[float | None] = mapped_column()
    net_energy_j_per_query: Mapped[float | None] = mapped_column()
    mean_power_w: Mapped[float | None] = mapped_column()
    median_power_w: Mapped[float | None] = mapped_column()
    samples: Mapped[int] = mapped_column(Integer)
    fresh_samples: Mapped[int] = mapped_column(Integer)
    under_resolved: Mapped[bool] = mapped_column(Boolean)
    throttled: Mapped[bool | None] = mapped_column(Boolean)
    temp_c_before: Mapped[float | None] = mapped_column()
    temp_c_after: Mapped[float | None] = mapped_column()
    freq_mhz_before: Mapped[float | None] = mapped_column()
    freq_mhz_after: Mapped[float | None] = mapped_column()
    throttled_flags_before: Mapped[str | None] = mapped_column(String(32))
    throttled_flags_after: Mapped[str | None] = mapped_column(String(32))
    #: per-phase energy summed over the window's queries (``agent/phases.py``); the
    #: per-token figures are null where the phase is under-resolved
    prefill_energy_j: Mapped[float | None] = mapped_column()
    decode_energy_j: Mapped[float | None] = mapped_column()
    prefill_tokens: Mapped[int | None] = mapped_column(Integer)
    decode_tokens: Mapped[int | None] = mapped_column(Integer)
    prefill_fresh_samples: Mapped[int | None] = mapped_column(Integer)
    decode_fresh_samples: Mapped[int | None] = mapped_column(Integer)
    prefill_under_resolved: Mapped[bool | None] = mapped_column(Boolean)
    decode_under_resolved: Mapped[bool | None] = mapped_column(Boolean)
    energy_j_per_prefill_token: Mapped[float | None] = mapped_column()
    energy_j_per_decode_token: Mapped[float | None] = mapped_column()


class Score(Base):
    """A task metric (e.g. perplexity) reported by the agent."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column()


class Message(Base):
    """A warning or error event of a trial."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    level: Mapped[MessageLevel] = mapped_column(_enum(MessageLevel, "message_level"))
    code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class PowerSample(Base):
    """One raw meter reading (optional, bulk): ``t`` is agent monotonic seconds."""

    __tablename__ = "power_samples"
    __table_args__ = (Index(None, "trial_id", "t"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    t: Mapped[float] = mapped_column()
    watts: Mapped[float | None] = mapped_column()
    volts: Mapped[float | None] = mapped_column()
    amps: Mapped[float | None] = mapped_column()
    fresh: Mapped[bool] = mapped_column(Boolean)


#: every table of the schema, for migrations and tests
metadata = Base.metadata


class PlaceHold(Base):
    """A labgrid place that a run acquired for one of its devices.

    Written when the place is acquired and closed (``released_at``, ``outcome``) when it
    is let go, so that the places a crashed run still holds are known: ``--resume`` reuses
    them and ``tslm-fleet lab release RUN_ID`` releases them.
    """

    __tablename__ = "place_holds"
    __table_args__ = (UniqueConstraint("run_id", "device"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(128))
    place: Mapped[str] = mapped_column(String(128))
    coordinator: Mapped[str] = mapped_column(String(255))
    #: labgrid's ``host/user`` that acquired the place
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(default=utc_now)
    released_at: Mapped[datetime | None] = mapped_column()
    #: released, lost (taken by someone else) or gone (no longer held when looked at)
    outcome: Mapped[str | None] = mapped_column(String(16))
