"""With the database and Temporal unreachable the API still answers: 503, never a trace."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app
from api.reconcile import reconcile
from schema import crud
from schema.settings import Settings
from schema.tasks import TaskSpec
from schema.temporal_ids import PREVIEW_PREFIX
from tests.conftest import eventually
from tests.fixtures.loopback import free_port
from tests.fixtures.tasks import recurring


async def test_unreachable_dependencies_are_503() -> None:
    closed = free_port()
    settings = Settings(
        env="dev",
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/nothing",
        temporal_address=f"127.0.0.1:{closed}",
        task_queue="unused",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cronpilot") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            detail = ready.json()["detail"]
            assert "database unreachable" in detail and "temporal unreachable" in detail
            tasks = await client.get("/api/tasks", headers={"Authorization": "Bearer cp_x"})
            assert tasks.status_code == 503
            assert tasks.json()["detail"] == "the database is unreachable; try again shortly"
            assert "Traceback" not in tasks.text


async def test_ready_only_once_the_first_reconcile_ran(
    settings: Settings,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    pg_url: str,
) -> None:
    """Reconcile at start holds each task's row lock; while one is held elsewhere it waits,
    and so does readiness (a change sent meanwhile is not undone: it waits its turn)."""
    async with sessions.begin() as session:
        owner = await crud.create_user(session, name=f"ready-{uuid.uuid4().hex[:8]}")
        spec = TaskSpec.model_validate(recurring("http://127.0.0.1:9/", interval_seconds=86400))
        task = await crud.create_task(session, user_id=owner.id, spec=spec)
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    app = create_app(settings, temporal=temporal)
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task.id,))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                await asyncio.sleep(1)
                waiting = await client.get("/readyz")
                assert waiting.status_code == 503, waiting.text
                assert "schedules reconciling" in waiting.json()["detail"]
                await holder.rollback()

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready)
                body = (await client.get("/readyz")).json()
                assert body == {
                    "status": "ready",
                    "database": "ok",
                    "temporal": "ok",
                    "schedules": "ok",
                }
    # The task had no schedule (created straight in the database): reconcile made it.
    assert (await temporal.get_schedule_handle(f"task-{task.id}").describe()).schedule
    await temporal.get_schedule_handle(f"task-{task.id}").delete()


async def test_reconcile_sweeps_left_over_preview_schedules(
    temporal: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    old = f"{PREVIEW_PREFIX}{uuid.uuid4()}"
    await temporal.create_schedule(
        old,
        Schedule(
            action=ScheduleActionStartWorkflow("TaskWorkflow", id=old, task_queue="none"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )

    async def listed() -> bool:
        return old in [s.id async for s in await temporal.list_schedules()]

    await eventually(listed)
    kept = await reconcile(sessions, temporal, settings.task_queue)
    assert old not in kept.previews, "a young preview may be in use"
    swept = await reconcile(sessions, temporal, settings.task_queue, preview_grace=timedelta(0))
    assert old in swept.previews
    try:
        await temporal.get_schedule_handle(old).describe()
    except RPCError as error:
        assert error.status == RPCStatusCode.NOT_FOUND
    else:
        raise AssertionError("the preview schedule is still there")
