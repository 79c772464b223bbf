"""Artifacts carry the ratio against the source model's stored format and that format.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("compression_ratio_source", sa.Double(), nullable=True))
        batch.add_column(sa.Column("source_format", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("source_format")
        batch.drop_column("compression_ratio_source")
