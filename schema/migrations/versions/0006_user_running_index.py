"""a partial index of each user's running executions: the web UI's task list asks for them
every second, which otherwise scans the user's whole history for the few running rows

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_index(
        "ix_task_executions_user_running",
        "task_executions",
        ["user_id", "started_at", "id"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_index("ix_task_executions_user_running", table_name="task_executions")
