"""Trials carry the agent's peak resident set (and its scope) and median decode time per
token.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("peak_rss_scope", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("decode_s_per_token", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("decode_s_per_token")
        batch.drop_column("peak_rss_scope")
        batch.drop_column("peak_rss_bytes")
