"""A chain asleep while its worker stops carries on with the next worker: nothing lost,
nothing repeated."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api import scheduling
from api.scheduling import ScheduledTask
from schema import crud
from schema.settings import Settings
from schema.tasks import TaskSpec
from tests.conftest import eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring, webhook_action
from worker import build_workers, running


async def _steps(
    sessions: async_sessionmaker[AsyncSession], workflow_id: str, run_id: str
) -> tuple[str, dict[str, str]] | None:
    async with sessions() as session:
        rows = await crud.executions_of_runs(session, runs=[(workflow_id, run_id)])
    if not rows:
        return None
    [row] = rows
    return row.status, {step["id"]: step["status"] for step in row.steps}


async def test_a_chain_survives_a_worker_restart_mid_sleep(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    target: HttpTarget,
) -> None:
    key = uuid.uuid4().hex
    body: dict[str, Any] = recurring("http://unused.invalid/", interval_seconds=86400)
    body["action"] = {
        "type": "task_chain",
        "config": {
            "steps": [
                {"id": "before", "action": webhook_action(f"{target.url}/ok/{key}-before")},
                {"id": "nap", "sleep_seconds": 4},
                {"id": "after", "action": webhook_action(f"{target.url}/ok/{key}-after")},
            ]
        },
    }
    async with sessions.begin() as session:
        owner = await crud.create_user(session, name=f"restart-{key[:8]}")
        task = await crud.create_task(session, user_id=owner.id, spec=TaskSpec.model_validate(body))
    queue = f"restart-{key[:8]}"
    own = settings.model_copy(update={"task_queue": queue})
    workflow_id = f"task-{task.id}-manual-{key}"
    workers, deps = build_workers(temporal, sessions, own)
    async with running(workers):
        run_id = await scheduling.start_run(
            temporal,
            ScheduledTask.of(task),
            queue,
            workflow_id=workflow_id,
            trigger="manual",
            scheduled_at=datetime.now(UTC),
        )
        assert run_id is not None

        async def asleep() -> bool | None:
            found = await _steps(sessions, workflow_id, run_id)
            return True if found and found[1].get("nap") == "running" else None

        await eventually(asleep)
    await deps.close()
    # No worker while it sleeps: the timer fires into Temporal's history, and waits.
    await asyncio.sleep(5)
    assert target.hits(f"{key}-after") == 0
    workers, deps = build_workers(temporal, sessions, own)
    try:
        async with running(workers):

            async def ended() -> tuple[str, dict[str, str]] | None:
                found = await _steps(sessions, workflow_id, run_id)
                return found if found and found[0] != "running" else None

            status, steps = await eventually(ended, timeout=60)
    finally:
        await deps.close()
    assert status == "succeeded"
    assert steps == {"before": "succeeded", "nap": "succeeded", "after": "succeeded"}
    assert target.hits(f"{key}-before") == 1 and target.hits(f"{key}-after") == 1
