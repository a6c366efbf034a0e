"""A database outage delays history and never loses, duplicates or skips a run.

The worker reaches PostgreSQL through a loopback TCP proxy that the tests cut and restore.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api import scheduling
from api.scheduling import ScheduledTask
from schema import crud
from schema.db import create_engine, create_sessionmaker
from schema.orm import Task, TaskExecution
from schema.settings import Settings
from schema.tasks import TaskRunInput, TaskSpec
from schema.temporal_ids import record_workflow_id
from tests.conftest import eventually
from tests.fixtures.histories import events_holding
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring
from tests.fixtures.tcp_proxy import TcpProxy
from worker import build_workers

CUT_SECONDS = 30
EVERY_SECONDS = 2


@dataclass
class ProxiedWorker:
    proxy: TcpProxy
    queue: str


@asynccontextmanager
async def _worker_behind_proxy(
    pg_url: str, temporal: Client, settings: Settings
) -> AsyncIterator[ProxiedWorker]:
    """A worker on its own task queue whose database connections go through the proxy."""
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = create_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    queue = f"outage-{uuid.uuid4().hex[:8]}"
    workers, deps = build_workers(
        temporal, create_sessionmaker(proxied), settings.model_copy(update={"task_queue": queue})
    )
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield ProxiedWorker(proxy, queue)
    finally:
        await proxy.cut()
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs)
        await deps.close()
        await proxied.dispose()


async def _task(sessions: async_sessionmaker[AsyncSession], body: dict[str, object]) -> Task:
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"outage-{uuid.uuid4().hex[:8]}")
        return await crud.create_task(session, user_id=user.id, spec=TaskSpec.model_validate(body))


async def _finished_rows(
    sessions: async_sessionmaker[AsyncSession], task_id: uuid.UUID
) -> list[TaskExecution]:
    async with sessions() as session:
        rows = (
            await session.scalars(select(TaskExecution).where(TaskExecution.task_id == task_id))
        ).all()
    return [row for row in rows if row.status != "running"]


async def test_history_survives_a_database_outage(
    pg_url: str,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    target: HttpTarget,
    settings: Settings,
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/big/{key}?size=3000", interval_seconds=3600, config={"method": "GET"}
    )
    task = await _task(sessions, body)
    async with _worker_behind_proxy(pg_url, temporal, settings) as worker:
        await worker.proxy.cut()
        handle = await temporal.start_workflow(
            "TaskWorkflow",
            TaskRunInput(
                task_id=task.id,
                user_id=task.user_id,
                task=TaskSpec.model_validate(body),
                trigger="manual",
                scheduled_at=datetime.now(UTC),
            ),
            id=f"task-{task.id}-manual-{key}",
            task_queue=worker.queue,
        )
        # Neither the action nor the end of the run waits for history: the run ends while
        # the database is still down, and hands its final record over.
        result = await asyncio.wait_for(handle.result(), timeout=30)
        assert result["status"] == "succeeded"
        assert target.hits(key) == 1
        assert await _finished_rows(sessions, task.id) == [], "nothing is written in the outage"

        await worker.proxy.start()
        rows = await eventually(lambda: _finished_rows(sessions, task.id), timeout=90)
        async with sessions() as session:
            stored = await session.get(Task, task.id)
        assert [(r.status, r.attempts, r.trigger) for r in rows] == [("succeeded", 1, "manual")]
        assert str(rows[0].id) == result["execution_id"]
        assert rows[0].result["body"] == "x" * 3000, "the handed-over record keeps the result"
        assert stored is not None and stored.run_count == 1
        assert target.hits(key) == 1
    # The result is stored in Temporal as the action's result and as the hand-over's input
    # (which Temporal copies to the child's start), never again: not in the run's own
    # result, not in the input of the child's activity, which reads it from the child's start.
    run_history = await handle.fetch_history()
    assert events_holding(run_history, "x" * 3000) == [
        "ACTIVITY_TASK_COMPLETED",
        "START_CHILD_WORKFLOW_EXECUTION_INITIATED",
    ]
    child = temporal.get_workflow_handle(record_workflow_id(run_history.run_id))
    assert events_holding(await child.fetch_history(), "x" * 3000) == ["WORKFLOW_EXECUTION_STARTED"]


async def test_a_recurring_task_keeps_firing_through_a_database_outage(
    pg_url: str,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    target: HttpTarget,
    settings: Settings,
) -> None:
    key = uuid.uuid4().hex
    task = await _task(sessions, recurring(f"{target.url}/ok/{key}", interval_seconds=2))
    async with _worker_behind_proxy(pg_url, temporal, settings) as worker:
        await scheduling.create_schedule(temporal, ScheduledTask.of(task), worker.queue)
        schedule = temporal.get_schedule_handle(f"task-{task.id}")
        try:
            await target.wait_for_hits(key, 1)
            before = (await schedule.describe()).info
            hits_before = target.hits(key)
            await worker.proxy.cut()
            await asyncio.sleep(CUT_SECONDS)
            during = (await schedule.describe()).info
            hits_during = target.hits(key) - hits_before
            await worker.proxy.start()
            await schedule.pause(note="test over")
        finally:
            # Its runs are recorded with or without their schedule.
            await asyncio.sleep(EVERY_SECONDS)
            fired = (await schedule.describe()).info.num_actions
            await schedule.delete()

        # The schedule fired every time it was due, skipping none for overlap.
        assert during.num_actions_skipped_overlap == before.num_actions_skipped_overlap
        assert during.num_actions - before.num_actions >= CUT_SECONDS // EVERY_SECONDS - 1
        assert hits_during >= CUT_SECONDS // EVERY_SECONDS - 1

        # Every run is recorded once, after the outage: none lost, none twice.
        async def all_recorded() -> list[TaskExecution] | None:
            rows = await _finished_rows(sessions, task.id)
            return rows if len(rows) >= fired else None

        rows = await eventually(all_recorded, timeout=120)
        assert len(rows) == fired == target.hits(key)
        assert len({(r.workflow_id, r.run_id) for r in rows}) == fired
        assert {r.status for r in rows} == {"succeeded"}
        assert {r.trigger for r in rows} == {"schedule"}
        async with sessions.begin() as session:
            stored = await session.get(Task, task.id)
            assert stored is not None and stored.run_count == fired
            # Gone, so that no later reconcile brings its 2 s schedule back.
            await session.delete(stored)
