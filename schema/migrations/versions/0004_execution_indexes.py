"""indexes that keep execution queries fast as history grows: `id` closes every keyset
index, and a partial index finds the running executions; `rerun_of` on executions

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

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    with op.batch_alter_table("task_executions") as batch:
        batch.add_column(sa.Column("rerun_of", sa.Uuid(), nullable=True))
    op.drop_index("ix_task_executions_task_status_started", table_name="task_executions")
    op.create_index(
        "ix_task_executions_task_status_started",
        "task_executions",
        ["task_id", "status", "started_at", "id"],
    )
    op.drop_index("ix_task_executions_user_started", table_name="task_executions")
    op.create_index(
        "ix_task_executions_user_started", "task_executions", ["user_id", "started_at", "id"]
    )
    op.create_index(
        "ix_task_executions_running",
        "task_executions",
        ["started_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    with op.batch_alter_table("task_executions") as batch:
        batch.drop_column("rerun_of")
    op.drop_index("ix_task_executions_running", table_name="task_executions")
    op.drop_index("ix_task_executions_user_started", table_name="task_executions")
    op.create_index("ix_task_executions_user_started", "task_executions", ["user_id", "started_at"])
    op.drop_index("ix_task_executions_task_status_started", table_name="task_executions")
    op.create_index(
        "ix_task_executions_task_status_started",
        "task_executions",
        ["task_id", "status", "started_at"],
    )
