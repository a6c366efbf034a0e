"""the ledger of webhook signatures (`webhook_signatures`): a captured request replayed with
another delivery id is refused by every API process, for as long as it could be accepted

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_signatures",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column(
            "webhook_id",
            sa.Uuid(),
            sa.ForeignKey("task_webhooks.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_signatures_expires", "webhook_signatures", ["expires_at"])
    op.create_index("ix_webhook_signatures_webhook", "webhook_signatures", ["webhook_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_signatures_webhook", table_name="webhook_signatures")
    op.drop_index("ix_webhook_signatures_expires", table_name="webhook_signatures")
    op.drop_table("webhook_signatures")
