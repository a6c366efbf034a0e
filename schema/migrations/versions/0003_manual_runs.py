"""the last run started by hand, so run now can honour the overlap policy

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
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("last_manual_workflow_id", sa.String(length=255)))
        batch.add_column(sa.Column("last_manual_run_id", sa.String(length=64)))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("last_manual_run_id")
        batch.drop_column("last_manual_workflow_id")
