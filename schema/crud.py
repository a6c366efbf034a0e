"""Query functions shared by routes and activities. They only flush; callers commit."""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from schema.actions import STORED
from schema.executions import FINAL_STATUSES, ExecutionFinished, ExecutionStarted, LogEntry
from schema.orm import (
    ApiKey,
    Secret,
    Task,
    TaskExecution,
    TaskWebhook,
    User,
    UtcDateTime,
    WebhookSignature,
    utcnow,
)
from schema.tasks import TaskSpec

API_KEY_PREFIX = "cp_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Unchanged(enum.Enum):
    """Marks a field that an update leaves as it is."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


class InvalidCursor(ValueError):
    """A pagination cursor that this server did not hand out."""


# -- users and keys ---------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_user(session: AsyncSession, *, name: str) -> User:
    user = User(id=uuid.uuid4(), name=name, created_at=utcnow())
    session.add(user)
    await session.flush()
    return user


async def get_user_by_name(session: AsyncSession, *, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def create_api_key(session: AsyncSession, *, user_id: uuid.UUID) -> tuple[ApiKey, str]:
    """A new key for the user; the plain key is returned once and only its hash is kept."""
    plain = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=uuid.uuid4(),
        user_id=user_id,
        prefix=plain[:10],
        key_hash=hash_api_key(plain),
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    return key, plain


async def revoke_api_key(session: AsyncSession, *, key_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


async def user_for_api_key(session: AsyncSession, *, key: str) -> User | None:
    """The owner of an unrevoked key, noting when the key was last used (to the minute)."""
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    api_key, user = row.tuple()
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        api_key.last_used_at = now
        await session.flush()
    return user


# -- keyset pagination ------------------------------------------------------------------


MAX_CURSOR_LENGTH = 200


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A cursor this server handed out: ``[aware ISO timestamp, UUID]``; InvalidCursor else."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("invalid cursor: too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        match decoded:
            case [str(at_text), str(id_text)]:
                at, row_id = datetime.fromisoformat(at_text), uuid.UUID(id_text)
            case _:
                raise ValueError("not a pair")
    except (ValueError, TypeError, RecursionError) as error:
        raise InvalidCursor("invalid cursor") from error
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidCursor("invalid cursor: its timestamp has no offset")
    return at.astimezone(UTC), row_id


def _page(
    query: Select[Any], at_column: Any, id_column: Any, *, limit: int, cursor: str | None
) -> Select[Any]:
    if cursor:
        at, row_id = decode_cursor(cursor)
        # A row-value comparison, which the (…, at, id) indexes answer as one range scan.
        query = query.where(tuple_(at_column, id_column) < tuple_(at, row_id))
    return query.order_by(at_column.desc(), id_column.desc()).limit(limit + 1)


# -- tasks ------------------------------------------------------------------------------


def apply_spec(task: Task, spec: TaskSpec) -> None:
    """Copy a validated spec onto a task row."""
    data = spec.model_dump(mode="json")
    for name in TaskSpec.model_fields:
        setattr(task, name, data[name])
    trigger = spec.trigger
    task.event_name = trigger.event if trigger is not None and trigger.kind == "event" else None
    task.updated_at = utcnow()


def task_spec(task: Task) -> TaskSpec:
    """The spec stored on a task row (read as stored: a check added since does not make it
    unreadable)."""
    stored = {name: getattr(task, name) for name in TaskSpec.model_fields}
    return TaskSpec.model_validate(stored, context=STORED)


async def create_task(session: AsyncSession, *, user_id: uuid.UUID, spec: TaskSpec) -> Task:
    now = utcnow()
    task = Task(
        id=uuid.uuid4(),
        user_id=user_id,
        status="active",
        created_at=now,
        run_count=0,
        failure_count=0,
    )
    apply_spec(task, spec)
    task.updated_at = now
    session.add(task)
    await session.flush()
    return task


async def get_task(session: AsyncSession, *, user_id: uuid.UUID, task_id: uuid.UUID) -> Task | None:
    return await session.scalar(select(Task).where(Task.id == task_id, Task.user_id == user_id))


async def task_exists(
    session: AsyncSession, *, task_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> bool:
    """Whether the task is there (and, with ``user_id``, that user's)."""
    query = select(Task.id).where(Task.id == task_id)
    if user_id is not None:
        query = query.where(Task.user_id == user_id)
    return await session.scalar(query) is not None


async def lock_task(
    session: AsyncSession,
    *,
    task_id: uuid.UUID,
    user_id: uuid.UUID | None = None,
    shared: bool = False,
) -> Task | None:
    """The task row, read fresh and locked until the transaction ends, so that one task's
    changes (its row and its schedule) happen one at a time, across processes. A shared
    lock (for starting a run) excludes changes but not other shared holders.

    PostgreSQL locks the row (``FOR NO KEY UPDATE``, or ``FOR SHARE``). SQLite has one writer at a
    time: a write that changes nothing takes its lock, waiting for the busy timeout; it must
    be the transaction's first write, which it is when the caller calls this first. SQLite
    has no shared row lock: a shared holder there relies on the API's in-process lock.
    """
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite and not shared:
        await session.execute(update(Task).where(Task.id == task_id).values(status=Task.status))
    query = select(Task).where(Task.id == task_id)
    if not sqlite:
        # NO KEY UPDATE: the task's history rows (whose foreign key only needs the key to
        # stay) are still written meanwhile.
        query = query.with_for_update(read=shared, key_share=not shared)
    if user_id is not None:
        query = query.where(Task.user_id == user_id)
    return await session.scalar(query.execution_options(populate_existing=True))


def _has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return type_coerce(Task.tags, postgresql.JSONB).contains([tag])
    each = func.json_each(Task.tags).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value == tag))


async def list_tasks(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    status: str | None = None,
    task_type: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[Sequence[Task], str | None]:
    query = select(Task).where(Task.user_id == user_id)
    if status:
        query = query.where(Task.status == status)
    if task_type:
        query = query.where(Task.type == task_type)
    if tag:
        query = query.where(_has_tag(tag, session.get_bind().dialect.name))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(Task.name.ilike(pattern, escape="\\"), Task.description.ilike(pattern, escape="\\"))
        )
    rows = (
        await session.scalars(_page(query, Task.created_at, Task.id, limit=limit, cursor=cursor))
    ).all()
    return _split_page(rows, limit, lambda t: encode_cursor(t.created_at, t.id))


def _split_page(
    rows: Sequence[Any], limit: int, cursor_of: Any
) -> tuple[Sequence[Any], str | None]:
    if len(rows) > limit:
        return rows[:limit], cursor_of(rows[limit - 1])
    return rows, None


SCHEDULED_TYPES = ("one_time", "recurring")
SCHEDULED_STATUSES = ("active", "paused")


def polls_email(task: Task) -> bool:
    """An email-trigger task: a schedule polls its mailbox."""
    return (
        task.type == "trigger"
        and isinstance(task.trigger, dict)
        and (task.trigger.get("kind") == "email")
    )


def owns_schedule(task: Task) -> bool:
    """Whether the task should have a Temporal schedule now (time-based tasks, and the
    mailbox poll of email-trigger tasks)."""
    return (task.type in SCHEDULED_TYPES or polls_email(task)) and (
        task.status in SCHEDULED_STATUSES
    )


def owns_trigger_workflow(task: Task) -> bool:
    """Whether the task should have a running ``TriggerWorkflow`` now."""
    return task.type == "trigger" and task.status in SCHEDULED_STATUSES


async def scheduled_task_ids(session: AsyncSession) -> set[uuid.UUID]:
    """Every task that should own a Temporal schedule (active or paused, time-based or
    polling a mailbox)."""
    query = select(Task).where(
        Task.type.in_((*SCHEDULED_TYPES, "trigger")), Task.status.in_(SCHEDULED_STATUSES)
    )
    return {task.id for task in (await session.scalars(query)).all() if owns_schedule(task)}


async def trigger_task_ids(session: AsyncSession) -> set[uuid.UUID]:
    """Every trigger task that should have a running ``TriggerWorkflow``."""
    query = select(Task.id).where(Task.type == "trigger", Task.status.in_(SCHEDULED_STATUSES))
    return set((await session.scalars(query)).all())


async def event_tasks(session: AsyncSession, *, user_id: uuid.UUID, name: str) -> Sequence[Task]:
    """The user's active tasks that an event of this name starts."""
    query = select(Task).where(
        Task.user_id == user_id,
        Task.event_name == name,
        Task.type == "trigger",
        Task.status == "active",
    )
    return (await session.scalars(query.order_by(Task.created_at, Task.id))).all()


# -- webhooks ----------------------------------------------------------------------------


async def create_webhook(
    session: AsyncSession, *, task: Task, auth: str, secret_encrypted: str
) -> TaskWebhook:
    webhook = TaskWebhook(
        id=uuid.uuid4(),
        public_id="wh_" + secrets.token_urlsafe(24),
        task_id=task.id,
        user_id=task.user_id,
        auth=auth,
        secret_encrypted=secret_encrypted,
        created_at=utcnow(),
        use_count=0,
    )
    session.add(webhook)
    await session.flush()
    return webhook


async def list_webhooks(session: AsyncSession, *, task_id: uuid.UUID) -> Sequence[TaskWebhook]:
    query = select(TaskWebhook).where(TaskWebhook.task_id == task_id)
    return (await session.scalars(query.order_by(TaskWebhook.created_at, TaskWebhook.id))).all()


async def get_webhook(
    session: AsyncSession, *, public_id: str, user_id: uuid.UUID | None = None
) -> TaskWebhook | None:
    query = select(TaskWebhook).where(TaskWebhook.public_id == public_id)
    if user_id is not None:
        query = query.where(TaskWebhook.user_id == user_id)
    return await session.scalar(query)


async def webhook_target(
    session: AsyncSession, *, public_id: str
) -> tuple[TaskWebhook, Task] | None:
    """A live webhook and its task, for the receiver (one read, no write)."""
    query = (
        select(TaskWebhook, Task)
        .join(Task, Task.id == TaskWebhook.task_id)
        .where(TaskWebhook.public_id == public_id, TaskWebhook.revoked_at.is_(None))
    )
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row else None


async def count_webhook_uses(session: AsyncSession, uses: dict[str, tuple[int, datetime]]) -> None:
    """Add each webhook's uses since the last flush, and move its last use forward."""
    for public_id, (count, last_used_at) in uses.items():
        newer = or_(TaskWebhook.last_used_at.is_(None), TaskWebhook.last_used_at < last_used_at)
        statement = (
            update(TaskWebhook)
            .where(TaskWebhook.public_id == public_id)
            .values(
                use_count=TaskWebhook.use_count + count,
                last_used_at=case(
                    (newer, literal(last_used_at, type_=UtcDateTime())),
                    else_=TaskWebhook.last_used_at,
                ),
            )
        )
        await session.execute(statement.execution_options(synchronize_session=False))


async def claim_signature(
    session: AsyncSession,
    *,
    webhook_id: uuid.UUID,
    signature: str,
    delivery_id: str,
    expires_at: datetime,
    now: datetime,
) -> str:
    """Claim a webhook's ``signature`` for ``delivery_id`` until ``expires_at``; returns the
    delivery the signature is claimed for: another delivery id means a replay. An expired
    claim is taken over; a live one is only read (a replay writes nothing)."""
    digest = hashlib.sha256(f"{webhook_id}:{signature}".encode()).hexdigest()
    statement = _insert(session)(WebhookSignature).values(
        digest=digest, webhook_id=webhook_id, delivery_id=delivery_id, expires_at=expires_at
    )
    statement = statement.on_conflict_do_update(
        index_elements=["digest"],
        set_={"delivery_id": delivery_id, "expires_at": expires_at},
        where=WebhookSignature.expires_at <= now,
    ).returning(WebhookSignature.delivery_id)
    claimed = (await session.execute(statement)).scalar_one_or_none()
    if claimed is None:  # claimed already, and still live
        held = select(WebhookSignature.delivery_id).where(WebhookSignature.digest == digest)
        claimed = (await session.execute(held)).scalar_one()
    return claimed


async def delete_expired_signatures(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Delete up to ``batch`` signature claims that expired; returns how many."""
    expired = select(WebhookSignature.digest).where(WebhookSignature.expires_at <= now).limit(batch)
    result = await session.execute(
        delete(WebhookSignature).where(WebhookSignature.digest.in_(expired))
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def active_tasks(session: AsyncSession, *, user_id: uuid.UUID) -> Sequence[Task]:
    return (
        await session.scalars(
            select(Task).where(
                Task.user_id == user_id,
                Task.status == "active",
                Task.type.in_(("one_time", "recurring")),
            )
        )
    ).all()


# -- executions -------------------------------------------------------------------------


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def record_started(session: AsyncSession, record: ExecutionStarted) -> None:
    """Insert the running row unless the run is already recorded (idempotent)."""
    statement = (
        _insert(session)(TaskExecution)
        .values(
            **_execution_values(record),
            status="running",
            attempts=0,
            logs=[entry.model_dump(mode="json") for entry in record.logs],
            steps=[],
        )
        .on_conflict_do_nothing(index_elements=["workflow_id", "run_id"])
    )
    await session.execute(statement)


async def record_finished(session: AsyncSession, record: ExecutionFinished) -> bool:
    """Write the final row; True only the first time, so task counters move exactly once."""
    final = {
        "status": record.status,
        "finished_at": record.finished_at,
        "duration_ms": max(0, int((record.finished_at - record.started_at).total_seconds() * 1000)),
        "attempts": record.attempts,
        "result": record.result,
        "error": record.error.model_dump() if record.error else None,
        "logs": [entry.model_dump(mode="json") for entry in record.logs],
        "steps": record.steps,
    }
    statement = _insert(session)(TaskExecution).values(**_execution_values(record), **final)
    statement = statement.on_conflict_do_update(
        index_elements=["workflow_id", "run_id"],
        set_=final,
        where=TaskExecution.status.not_in(FINAL_STATUSES),
    ).returning(TaskExecution.id)
    return (await session.execute(statement)).first() is not None


def _execution_values(record: ExecutionStarted) -> dict[str, Any]:
    return {
        "id": record.execution_id,
        "task_id": record.task_id,
        "user_id": record.user_id,
        "workflow_id": record.workflow_id,
        "run_id": record.run_id,
        "trigger": record.trigger,
        "scheduled_at": record.scheduled_at,
        "started_at": record.started_at,
        "rerun_of": record.rerun_of,
    }


async def last_finished(
    session: AsyncSession, *, task_id: uuid.UUID, before: datetime, workflow_id: str
) -> TaskExecution | None:
    """The task's newest execution that ended and started before ``before`` (not the run
    ``workflow_id`` itself): a condition's ``last``."""
    query = (
        select(TaskExecution)
        .where(
            TaskExecution.task_id == task_id,
            TaskExecution.started_at <= before,
            TaskExecution.status.in_(FINAL_STATUSES),
            TaskExecution.workflow_id != workflow_id,
        )
        .order_by(TaskExecution.started_at.desc(), TaskExecution.id.desc())
        .limit(1)
    )
    return await session.scalar(query)


async def append_log(
    session: AsyncSession, *, workflow_id: str, run_id: str, entry: LogEntry
) -> None:
    """Add one line to an execution's log (once: the same line is not added twice)."""
    execution = await session.scalar(
        select(TaskExecution).where(
            TaskExecution.workflow_id == workflow_id, TaskExecution.run_id == run_id
        )
    )
    if execution is None:
        return
    line = entry.model_dump(mode="json")
    if any(existing.get("message") == line["message"] for existing in execution.logs):
        return
    execution.logs = [*execution.logs, line]


async def count_run(
    session: AsyncSession,
    *,
    task_id: uuid.UUID,
    status: str,
    finished_at: datetime,
    task_status: str | None,
    next_run_at: datetime | None | Unchanged,
) -> None:
    """Move a task's denormalised fields after one of its runs finished."""
    # A record written late (after a database outage) must not move them backwards.
    newer = or_(Task.last_run_at.is_(None), Task.last_run_at <= finished_at)
    values: dict[str, Any] = {
        "last_run_at": case(
            (newer, literal(finished_at, type_=UtcDateTime())), else_=Task.last_run_at
        ),
        "last_status": case((newer, status), else_=Task.last_status),
        "run_count": Task.run_count + 1,
        "failure_count": Task.failure_count + (1 if status in ("failed", "timed_out") else 0),
    }
    if not isinstance(next_run_at, Unchanged):
        values["next_run_at"] = next_run_at
    if task_status:
        values["status"] = task_status
    statement = update(Task).where(Task.id == task_id).values(**values)
    # Loaded rows are not touched: a caller that shows the task refreshes it.
    await session.execute(statement.execution_options(synchronize_session=False))


async def list_executions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    task_id: uuid.UUID | None = None,
    status: str | None = None,
    workflow_id: str | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[Sequence[TaskExecution], str | None]:
    """One task's executions (or all the user's), newest first."""
    query = select(TaskExecution).where(TaskExecution.user_id == user_id)
    if task_id is not None:
        query = query.where(TaskExecution.task_id == task_id)
    if started_from is not None:
        query = query.where(TaskExecution.started_at >= started_from)
    if started_to is not None:
        query = query.where(TaskExecution.started_at < started_to)
    if status:
        query = query.where(TaskExecution.status == status)
    if workflow_id:
        query = query.where(TaskExecution.workflow_id == workflow_id)
    page = _page(query, TaskExecution.started_at, TaskExecution.id, limit=limit, cursor=cursor)
    # Lists never read the heavy columns; one execution's GET does.
    page = page.options(
        defer(TaskExecution.logs, raiseload=True),
        defer(TaskExecution.result, raiseload=True),
        defer(TaskExecution.steps, raiseload=True),
    )
    rows = (await session.scalars(page)).all()
    return _split_page(rows, limit, lambda e: encode_cursor(e.started_at, e.id))


async def get_execution(
    session: AsyncSession, *, user_id: uuid.UUID, execution_id: uuid.UUID
) -> TaskExecution | None:
    return await session.scalar(
        select(TaskExecution).where(
            TaskExecution.id == execution_id, TaskExecution.user_id == user_id
        )
    )


# -- statistics -------------------------------------------------------------------------


async def execution_counts(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    task_id: uuid.UUID | None = None,
    since: datetime | None = None,
) -> dict[str, int]:
    """Executions by status, for one task or all of a user's."""
    query = (
        select(TaskExecution.status, func.count())
        .where(TaskExecution.user_id == user_id)
        .group_by(TaskExecution.status)
    )
    if task_id:
        query = query.where(TaskExecution.task_id == task_id)
    if since:
        query = query.where(TaskExecution.started_at >= since)
    return dict((await session.execute(query)).tuples().all())


DURATION_WINDOW = 1000  # runs the duration statistics look at, newest first


async def duration_stats(
    session: AsyncSession, *, task_id: uuid.UUID
) -> tuple[float | None, int | None]:
    """Average and 95th percentile duration of a task's last ``DURATION_WINDOW`` finished
    runs: read newest first along the (task_id, started_at, id) index, never the whole
    history, however long it grows."""
    recent = (
        select(TaskExecution.duration_ms.label("duration_ms"))
        .where(TaskExecution.task_id == task_id, TaskExecution.duration_ms.is_not(None))
        .order_by(TaskExecution.started_at.desc(), TaskExecution.id.desc())
        .limit(DURATION_WINDOW)
        .subquery()
    )
    durations = sorted((await session.scalars(select(recent.c.duration_ms))).all())
    if not durations:
        return None, None
    p95 = durations[min(len(durations) - 1, int(0.95 * len(durations)))]
    return sum(durations) / len(durations), p95


async def task_counts(session: AsyncSession, *, user_id: uuid.UUID) -> dict[str, int]:
    query = select(Task.status, func.count()).where(Task.user_id == user_id).group_by(Task.status)
    return dict((await session.execute(query)).tuples().all())


async def ping(session: AsyncSession) -> None:
    await session.execute(text("SELECT 1"))


async def delete_executions_before(session: AsyncSession, *, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` executions that started before ``cutoff``; returns how many."""
    oldest = select(TaskExecution.id).where(TaskExecution.started_at < cutoff).limit(batch)
    result = await session.execute(delete(TaskExecution).where(TaskExecution.id.in_(oldest)))
    return int(getattr(result, "rowcount", 0) or 0)


# -- secrets ----------------------------------------------------------------------------


async def put_secret(
    session: AsyncSession, *, user_id: uuid.UUID, name: str, value_encrypted: str
) -> tuple[Secret, bool]:
    """Create or replace a user's secret in one upsert (concurrent writes of a new name all
    succeed, the last one winning); True when this call created it."""
    now = utcnow()
    new_id = uuid.uuid4()
    statement = _insert(session)(Secret).values(
        id=new_id,
        user_id=user_id,
        name=name,
        value_encrypted=value_encrypted,
        created_at=now,
        updated_at=now,
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[Secret.user_id, Secret.name],
        set_={"value_encrypted": value_encrypted, "updated_at": now},
    ).returning(Secret)
    secret = (await session.scalars(upsert, execution_options={"populate_existing": True})).one()
    return secret, secret.id == new_id


async def list_secrets(session: AsyncSession, *, user_id: uuid.UUID) -> Sequence[Secret]:
    return (
        await session.scalars(select(Secret).where(Secret.user_id == user_id).order_by(Secret.name))
    ).all()


async def delete_secret(session: AsyncSession, *, user_id: uuid.UUID, name: str) -> bool:
    result = await session.execute(
        delete(Secret).where(Secret.user_id == user_id, Secret.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


async def all_webhooks(session: AsyncSession) -> Sequence[TaskWebhook]:
    return (await session.scalars(select(TaskWebhook))).all()


async def all_secrets(session: AsyncSession) -> Sequence[Secret]:
    return (await session.scalars(select(Secret))).all()


async def executions_since(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    task_id: uuid.UUID,
    since: datetime,
    limit: int = 500,
) -> Sequence[TaskExecution]:
    """A user's task's executions since ``since``, newest first (for reports)."""
    return (
        await session.scalars(
            select(TaskExecution)
            .where(
                TaskExecution.user_id == user_id,
                TaskExecution.task_id == task_id,
                TaskExecution.started_at >= since,
            )
            .order_by(TaskExecution.started_at.desc())
            .limit(limit)
        )
    ).all()


async def running_executions_before(
    session: AsyncSession, *, cutoff: datetime, limit: int
) -> Sequence[TaskExecution]:
    """Executions still marked running that started before ``cutoff``."""
    return (
        await session.scalars(
            select(TaskExecution)
            .where(TaskExecution.status == "running", TaskExecution.started_at < cutoff)
            .order_by(TaskExecution.started_at)
            .limit(limit)
        )
    ).all()


async def executions_of_runs(
    session: AsyncSession, *, runs: Sequence[tuple[str, str]]
) -> Sequence[TaskExecution]:
    """The executions of these (workflow id, run id) pairs that are recorded."""
    if not runs:
        return []
    pairs = [and_(TaskExecution.workflow_id == w, TaskExecution.run_id == r) for w, r in runs]
    return (await session.scalars(select(TaskExecution).where(or_(*pairs)))).all()
