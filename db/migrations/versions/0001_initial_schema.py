"""Initial schema: devices, artifacts, runs, trials, events and the derived tables.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("compression_ratio", sa.Double(), nullable=True),
        sa.Column("embedding_params", sa.Integer(), nullable=True),
        sa.Column("compressed_params", sa.Integer(), nullable=True),
        sa.Column("total_params", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("reconstruction_error", sa.Double(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("key", name=op.f("uq_artifacts_key")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("board", sa.String(length=64), nullable=True),
        sa.Column("transport", sa.String(length=32), nullable=True),
        sa.Column("meter_kind", sa.String(length=32), nullable=True),
        sa.Column("meter_description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "ok",
                "partial",
                "failed",
                "interrupted",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("inventory_name", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("tool_version", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "ok",
                "failed",
                "stopped",
                "interrupted",
                name="trial_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("agent_version", sa.String(length=32), nullable=True),
        sa.Column("python_version", sa.String(length=32), nullable=True),
        sa.Column("torch_version", sa.String(length=32), nullable=True),
        sa.Column("transformers_version", sa.String(length=32), nullable=True),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("meter_kind", sa.String(length=32), nullable=True),
        sa.Column("meter_description", sa.Text(), nullable=True),
        sa.Column("meter_period_s", sa.Double(), nullable=True),
        sa.Column("idle_power_w", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["artifact_id"], ["artifacts.id"], name=op.f("fk_trials_artifact_id_artifacts")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_trials_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_trials_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint(
            "run_id",
            "device_id",
            "variant",
            "task",
            name=op.f("uq_trials_run_id_device_id_variant_task"),
        ),
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trials_run_id"), ["run_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("t", sa.Double(), nullable=False),
        sa.Column("wall", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_events_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("trial_id", "seq", name=op.f("uq_events_trial_id_seq")),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column(
            "level",
            sa.Enum(
                "warning",
                "error",
                name="message_level",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trials.id"],
            name=op.f("fk_messages_trial_id_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("trial_id", "seq", name=op.f("uq_messages_trial_id_seq")),
    )
    op.create_table(
        "power_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("t", sa.Double(), nullable=False),
        sa.Column("watts", sa.Double(), nullable=True),
        sa.Column("volts", sa.Double(), nullable=True),
        sa.Column("amps", sa.Double(), nullable=True),
        sa.Column("fresh", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trials.id"],
            name=op.f("fk_power_samples_trial_id_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_power_samples")),
    )
    with op.batch_alter_table("power_samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_power_samples_trial_id_t"), ["trial_id", "t"], unique=False
        )

    op.create_table(
        "queries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("rep", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("t_start", sa.Double(), nullable=False),
        sa.Column("t_end", sa.Double(), nullable=False),
        sa.Column("latency_s", sa.Double(), nullable=False),
        sa.Column("ttft_s", sa.Double(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("tokens_per_s", sa.Double(), nullable=True),
        sa.Column("output_sha256", sa.String(length=64), nullable=True),
        sa.Column("energy_j", sa.Double(), nullable=True),
        sa.Column("net_energy_j", sa.Double(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("fresh_samples", sa.Integer(), nullable=False),
        sa.Column("under_resolved", sa.Boolean(), nullable=False),
        sa.Column("throttled", sa.Boolean(), nullable=True),
        sa.Column("temp_c", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_queries_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queries")),
        sa.UniqueConstraint("trial_id", "seq", name=op.f("uq_queries_trial_id_seq")),
    )
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_scores_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
        sa.UniqueConstraint("trial_id", "seq", name=op.f("uq_scores_trial_id_seq")),
    )
    op.create_table(
        "windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=True),
        sa.Column("rep", sa.Integer(), nullable=True),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("t_start", sa.Double(), nullable=False),
        sa.Column("t_end", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("queries", sa.Integer(), nullable=False),
        sa.Column("energy_j", sa.Double(), nullable=True),
        sa.Column("net_energy_j", sa.Double(), nullable=True),
        sa.Column("energy_j_per_query", sa.Double(), nullable=True),
        sa.Column("net_energy_j_per_query", sa.Double(), nullable=True),
        sa.Column("mean_power_w", sa.Double(), nullable=True),
        sa.Column("median_power_w", sa.Double(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("fresh_samples", sa.Integer(), nullable=False),
        sa.Column("under_resolved", sa.Boolean(), nullable=False),
        sa.Column("throttled", sa.Boolean(), nullable=True),
        sa.Column("temp_c_before", sa.Double(), nullable=True),
        sa.Column("temp_c_after", sa.Double(), nullable=True),
        sa.Column("freq_mhz_before", sa.Double(), nullable=True),
        sa.Column("freq_mhz_after", sa.Double(), nullable=True),
        sa.Column("throttled_flags_before", sa.String(length=32), nullable=True),
        sa.Column("throttled_flags_after", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_windows_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_windows")),
        sa.UniqueConstraint("trial_id", "seq", name=op.f("uq_windows_trial_id_seq")),
    )


def downgrade() -> None:
    op.drop_table("windows")
    op.drop_table("scores")
    op.drop_table("queries")
    with op.batch_alter_table("power_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_power_samples_trial_id_t"))

    op.drop_table("power_samples")
    op.drop_table("messages")
    op.drop_table("events")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trials_run_id"))

    op.drop_table("trials")
    op.drop_table("runs")
    op.drop_table("devices")
    op.drop_table("artifacts")
