"""Labgrid places held by a run's devices (place_holds).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "place_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("place", sa.String(length=128), nullable=False),
        sa.Column("coordinator", sa.String(length=255), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_place_holds_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_place_holds")),
        sa.UniqueConstraint("run_id", "device", name=op.f("uq_place_holds_run_id_device")),
    )
    op.create_index(op.f("ix_place_holds_run_id"), "place_holds", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_place_holds_run_id"), table_name="place_holds")
    op.drop_table("place_holds")
