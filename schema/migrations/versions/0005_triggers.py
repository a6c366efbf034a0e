"""trigger tasks: webhooks (`task_webhooks`) and the event name an event-trigger task
listens to (`tasks.event_name`)

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
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("event_name", sa.String(200), nullable=True))
    op.create_index("ix_tasks_user_event", "tasks", ["user_id", "event_name"])
    op.create_table(
        "task_webhooks",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("public_id", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "task_id", sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("auth", sa.String(10), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_task_webhooks_task", "task_webhooks", ["task_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_task_webhooks_task", table_name="task_webhooks")
    op.drop_table("task_webhooks")
    op.drop_index("ix_tasks_user_event", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("event_name")
