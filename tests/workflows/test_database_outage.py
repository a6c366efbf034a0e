"""A database outage delays history and never loses or duplicates it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from schema import crud
from schema.db import create_engine, create_sessionmaker
from schema.orm import Task, TaskExecution
from schema.settings import Settings
from schema.tasks import TaskRunInput, TaskSpec
from tests.conftest import eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring
from tests.fixtures.tcp_proxy import TcpProxy
from worker import build_workers


async def test_history_survives_a_database_outage(
    pg_url: str,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    target: HttpTarget,
    settings: Settings,
) -> None:
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = create_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    queue = f"outage-{uuid.uuid4().hex[:8]}"
    workers, deps = build_workers(
        temporal, create_sessionmaker(proxied), settings.model_copy(update={"task_queue": queue})
    )
    runs = [asyncio.create_task(w.run()) for w in workers]
    key = uuid.uuid4().hex
    spec = TaskSpec.model_validate(recurring(f"{target.url}/ok/{key}", interval_seconds=3600))
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"outage-{key[:8]}")
        task = await crud.create_task(session, user_id=user.id, spec=spec)
    try:
        await proxy.cut()
        handle = await temporal.start_workflow(
            "TaskWorkflow",
            TaskRunInput(
                task_id=task.id,
                user_id=user.id,
                task=spec,
                trigger="manual",
                scheduled_at=datetime.now(UTC),
            ),
            id=f"task-{task.id}-manual-{key}",
            task_queue=queue,
        )
        # Neither the action nor the end of the run waits for history: the run ends while
        # the database is still down, and hands its final record over.
        result = await asyncio.wait_for(handle.result(), timeout=30)
        assert result["result"]["status_code"] == 200
        assert target.hits(key) == 1
        async with sessions() as session:
            rows = (
                await session.scalars(select(TaskExecution).where(TaskExecution.task_id == task.id))
            ).all()
        assert rows == [], "nothing can be written during the outage"

        await proxy.start()

        async def recorded() -> list[TaskExecution]:
            async with sessions() as session:
                found = (
                    await session.scalars(
                        select(TaskExecution).where(TaskExecution.task_id == task.id)
                    )
                ).all()
            return [r for r in found if r.status != "running"]

        rows = await eventually(recorded, timeout=90)
        async with sessions() as session:
            stored = await session.get(Task, task.id)
        assert [(r.status, r.attempts, r.trigger) for r in rows] == [("succeeded", 1, "manual")]
        assert stored is not None and stored.run_count == 1
        assert target.hits(key) == 1
    finally:
        await proxy.cut()
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs)
        await deps.close()
        await proxied.dispose()
