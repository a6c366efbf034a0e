"""SQLAlchemy 2 tables: definitions (users, keys, tasks) and the history read model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonColumn = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JsonColumn, Any: JsonColumn}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(20))
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn)
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn)
    action: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    condition: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn)
    retry: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    notify: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    tags: Mapped[list[str]] = mapped_column(JsonColumn, default=list)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(20))
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    # The newest run started by hand: run now checks it is over before honouring `skip`.
    last_manual_workflow_id: Mapped[str | None] = mapped_column(String(255))
    last_manual_run_id: Mapped[str | None] = mapped_column(String(64))
    # An event-trigger task's event name: POST /api/events finds its tasks by it.
    event_name: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_tasks_user_event", "user_id", "event_name"),
        # GET /api/tasks: newest first, optionally by status or type.
        Index("ix_tasks_user_created", "user_id", "created_at", "id"),
        Index("ix_tasks_user_status_created", "user_id", "status", "created_at", "id"),
        Index("ix_tasks_user_type_created", "user_id", "type", "created_at", "id"),
        Index(
            "ix_tasks_tags_gin",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
    )


class TaskWebhook(Base):
    """A trigger task's webhook: ``POST /api/webhooks/{public_id}`` starts the task."""

    __tablename__ = "task_webhooks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # The unguessable id in the webhook's URL (and in the API's `webhook_id`).
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    auth: Mapped[str] = mapped_column(String(10))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_task_webhooks_task", "task_id", "created_at"),)


class WebhookSignature(Base):
    """A signature a webhook accepted and the delivery it was for: sent again with another
    delivery id, it is a replay and refused. Kept until the signed request could not be
    accepted anyway (``hmac``: its timestamp is out of tolerance) or, for signatures without
    a timestamp (``github``), for ``WEBHOOK_REPLAY_DAYS``. Shared by every API process."""

    __tablename__ = "webhook_signatures"

    # sha256 of the webhook's row id and the signature: fixed size, nothing to reuse.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("task_webhooks.id", ondelete="CASCADE")
    )
    delivery_id: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_webhook_signatures_expires", "expires_at"),
        Index("ix_webhook_signatures_webhook", "webhook_id"),
    )


class Secret(Base):
    __tablename__ = "secrets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_secrets_user_name"),)


class TaskExecution(Base):
    __tablename__ = "task_executions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    scheduled_at: Mapped[datetime | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[Any] = mapped_column(JsonColumn, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn)
    logs: Mapped[list[dict[str, Any]]] = mapped_column(JsonColumn, default=list)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JsonColumn, default=list)
    rerun_of: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id", name="uq_task_executions_workflow_run"),
        # A task's history, newest first, optionally by status; retention by age.
        Index("ix_task_executions_task_started", "task_id", "started_at", "id"),
        Index("ix_task_executions_task_status_started", "task_id", "status", "started_at", "id"),
        Index("ix_task_executions_user_started", "user_id", "started_at", "id"),
        # Runs in flight (the hourly settling, overlap checks) without scanning history.
        Index(
            "ix_task_executions_running",
            "started_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index("ix_task_executions_started", "started_at"),
        # A user's runs in flight (the web UI's list asks every second).
        Index(
            "ix_task_executions_user_running",
            "user_id",
            "started_at",
            "id",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )
