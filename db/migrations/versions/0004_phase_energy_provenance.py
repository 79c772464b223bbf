"""Per-phase energy of queries and windows; provenance and stability records of trials.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TRIAL_COLUMNS = (
    ("provenance", sa.JSON),
    ("stability", sa.JSON),
)
_QUERY_COLUMNS = (
    ("decode_tokens", sa.Integer),
    ("prefill_energy_j", sa.Double),
    ("decode_energy_j", sa.Double),
    ("prefill_fresh_samples", sa.Integer),
    ("decode_fresh_samples", sa.Integer),
)
_WINDOW_COLUMNS = (
    ("prefill_energy_j", sa.Double),
    ("decode_energy_j", sa.Double),
    ("prefill_tokens", sa.Integer),
    ("decode_tokens", sa.Integer),
    ("prefill_fresh_samples", sa.Integer),
    ("decode_fresh_samples", sa.Integer),
    ("prefill_under_resolved", sa.Boolean),
    ("decode_under_resolved", sa.Boolean),
    ("energy_j_per_prefill_token", sa.Double),
    ("energy_j_per_decode_token", sa.Double),
)
_TABLES = (("trials", _TRIAL_COLUMNS), ("queries", _QUERY_COLUMNS), ("windows", _WINDOW_COLUMNS))


def upgrade() -> None:
    for table, columns in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name, type_ in columns:
                batch.add_column(sa.Column(name, type_(), nullable=True))


def downgrade() -> None:
    for table, columns in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(columns):
                batch.drop_column(name)
