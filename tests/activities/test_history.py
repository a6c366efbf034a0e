"""History activities, run directly as Temporal would (ActivityEnvironment), on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.history import HistoryActivities
from schema import crud
from schema.executions import ExecutionFinished, ExecutionStarted, LogEntry
from schema.orm import Task, TaskExecution
from schema.tasks import TaskSpec


async def _task(sessions: async_sessionmaker[AsyncSession], task_type: str = "recurring") -> Task:
    spec = TaskSpec.model_validate(
        {
            "name": "history",
            "type": task_type,
            "schedule": {"interval_seconds": 60}
            if task_type == "recurring"
            else {"run_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
            "action": {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        }
    )
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"h-{uuid.uuid4().hex[:8]}")
        return await crud.create_task(session, user_id=user.id, spec=spec)


def _records(task: Task, status: str = "succeeded") -> tuple[ExecutionStarted, ExecutionFinished]:
    now = datetime.now(UTC)
    started = ExecutionStarted(
        execution_id=uuid.uuid4(),
        task_id=task.id,
        user_id=task.user_id,
        workflow_id=f"task-{task.id}-2026-01-01T00:00:00Z",
        run_id=str(uuid.uuid4()),
        trigger="schedule",
        scheduled_at=now,
        started_at=now,
    )
    finished = ExecutionFinished(
        **started.model_dump(exclude={"logs"}),
        task_type=task.type,
        status=status,
        finished_at=now + timedelta(milliseconds=250),
        attempts=2,
        result={"status_code": 200},
        logs=[LogEntry(at=now, message="done")],
    )
    return started, finished


async def _rows(sessions: async_sessionmaker[AsyncSession], task: Task) -> list[TaskExecution]:
    async with sessions() as session:
        query = select(TaskExecution).where(TaskExecution.task_id == task.id)
        return list((await session.scalars(query)).all())


async def test_record_activities_are_idempotent(
    db: async_sessionmaker[AsyncSession], temporal: Client
) -> None:
    task = await _task(db)
    activities = HistoryActivities(db, temporal)
    env = ActivityEnvironment(client=temporal)
    started, finished = _records(task)

    await env.run(activities.record_execution_started, started)
    await env.run(activities.record_execution_started, started)
    rows = await _rows(db, task)
    assert [(r.status, r.attempts) for r in rows] == [("running", 0)]

    await env.run(activities.write_execution_record, finished)
    await env.run(activities.write_execution_record, finished)
    # A late "started" (retried after the final write) must not undo the final record.
    await env.run(activities.record_execution_started, started)
    rows = await _rows(db, task)
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.attempts, row.duration_ms) == ("succeeded", 2, 250)
    assert row.result == {"status_code": 200} and row.logs[0]["message"] == "done"
    assert row.id == started.execution_id

    async with db() as session:
        refreshed = await session.get(Task, task.id)
    assert refreshed is not None
    assert (refreshed.run_count, refreshed.failure_count, refreshed.last_status) == (
        1,
        0,
        "succeeded",
    )


async def test_finished_without_started_still_records_once(
    db: async_sessionmaker[AsyncSession], temporal: Client
) -> None:
    task = await _task(db)
    _, finished = _records(task, status="failed")
    activities = HistoryActivities(db, temporal)
    env = ActivityEnvironment(client=temporal)
    for _ in range(3):
        await env.run(activities.write_execution_record, finished)
    rows = await _rows(db, task)
    assert [(r.status, r.attempts) for r in rows] == [("failed", 2)]
    async with db() as session:
        count = await session.scalar(select(func.count()).select_from(TaskExecution))
        refreshed = await session.get(Task, task.id)
    assert count and refreshed is not None
    assert (refreshed.run_count, refreshed.failure_count) == (1, 1)


async def test_one_time_task_finishes_on_its_scheduled_run(
    db: async_sessionmaker[AsyncSession], temporal: Client
) -> None:
    task = await _task(db, "one_time")
    _, finished = _records(task, status="failed")
    await ActivityEnvironment(client=temporal).run(
        HistoryActivities(db, temporal).write_execution_record, finished
    )
    async with db() as session:
        refreshed = await session.get(Task, task.id)
    assert refreshed is not None and refreshed.status == "failed"


async def test_records_for_a_deleted_task_are_dropped(
    db: async_sessionmaker[AsyncSession], temporal: Client
) -> None:
    task = await _task(db)
    started, finished = _records(task)
    async with db.begin() as session:
        await session.delete(await session.get(Task, task.id))
    activities = HistoryActivities(db, temporal)
    env = ActivityEnvironment(client=temporal)
    await env.run(activities.record_execution_started, started)
    await env.run(activities.write_execution_record, finished)
    assert await _rows(db, task) == []


async def test_retention_deletes_only_old_executions(
    db: async_sessionmaker[AsyncSession], temporal: Client
) -> None:
    task = await _task(db)
    activities = HistoryActivities(db, temporal)
    env = ActivityEnvironment(client=temporal)
    old_ids: list[uuid.UUID] = []
    new_ids: list[uuid.UUID] = []
    for age_days in (45, 31, 29, 1):
        _, finished = _records(task)
        shifted = finished.model_copy(
            update={
                "started_at": finished.started_at - timedelta(days=age_days),
                "finished_at": finished.finished_at - timedelta(days=age_days),
            }
        )
        await env.run(activities.write_execution_record, shifted)
        (old_ids if age_days > 30 else new_ids).append(shifted.execution_id)
    deleted = await env.run(activities.delete_old_executions, 30)
    assert deleted >= 2
    remaining = {row.id for row in await _rows(db, task)}
    assert remaining == set(new_ids)
