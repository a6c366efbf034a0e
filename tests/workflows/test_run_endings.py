"""How a run ends when things go wrong around it: a cancellation while its record is being
written, a worker killed in the middle of an attempt, an input the workflow cannot read."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import RawValue

from api import scheduling
from api.scheduling import ScheduledTask
from schema import crud
from schema.orm import Task
from schema.settings import Settings
from schema.tasks import TaskSpec
from schema.temporal_ids import search_attributes
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring
from worker import build_workers

PROJECT = Path(__file__).resolve().parents[2]


async def _final(user: ApiUser, task_id: str, workflow_id: str) -> dict[str, Any] | None:
    runs = await user.executions(task_id, workflow_id=workflow_id)
    return runs[0] if runs and runs[0]["status"] != "running" else None


async def test_a_cancellation_while_recording_keeps_the_record(
    user: ApiUser, target: HttpTarget, temporal: Client, pg_url: str
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=1", interval_seconds=86400)
    task = await user.create_task(body)
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        # Hold the task's row: the final record, which updates it, waits while the action
        # ends (the running record only needs its key, which stays free).
        await holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR NO KEY UPDATE", (task["id"],))

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:

            async def record_waits() -> bool:
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE tasks SET last_run_at%%'"
                )
                row = await cursor.fetchone()
                return bool(row and row[0])

            await eventually(record_waits, timeout=30)
        handle = temporal.get_workflow_handle(started["workflow_id"], run_id=started["run_id"])
        await handle.cancel()
        await asyncio.sleep(1.5)  # the cancellation reaches the workflow while it records
        await holder.rollback()

    # The action had succeeded: the run completes and its record says so.
    assert (await handle.result())["status"] == "succeeded"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    run = await eventually(lambda: _final(user, task["id"], started["workflow_id"]))
    assert run["status"] == "succeeded", run
    assert run["result"]["status_code"] == 200
    refreshed = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert refreshed["run_count"] == 1 and refreshed["last_status"] == "succeeded"


def _worker_process(settings: Settings, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
    env.update(
        {
            "CRONPILOT_ENV": "dev",
            "CRONPILOT_DATABASE_URL": settings.resolved_database_url,
            "CRONPILOT_TEMPORAL_ADDRESS": settings.temporal_address,
            "CRONPILOT_TASK_QUEUE": queue,
            "CRONPILOT_SECRET_KEY": settings.secret_key or "",
            "CRONPILOT_WORKER_QUEUES": "main",
        }
    )
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "worker.py")],
        env=env,
        cwd=PROJECT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def test_a_killed_workers_attempt_keeps_its_log_line(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    target: HttpTarget,
    tmp_path: Path,
) -> None:
    key = uuid.uuid4().hex
    spec = TaskSpec.model_validate(
        recurring(
            f"{target.url}/slow/{key}?seconds=120&slow_hits=1",
            interval_seconds=86400,
            retry=fast_retry(3),
            timeout_seconds=600,
        )
    )
    async with sessions.begin() as session:
        owner = await crud.create_user(session, name=f"killed-{key[:8]}")
        task = await crud.create_task(session, user_id=owner.id, spec=spec)
    queue = f"killed-{key[:8]}"
    process = _worker_process(settings, queue, tmp_path / "worker.log")
    workflow_id = f"task-{task.id}-manual-{key}"
    try:
        run_id = await scheduling.start_run(
            temporal,
            ScheduledTask.of(task),
            queue,
            workflow_id=workflow_id,
            trigger="manual",
            scheduled_at=datetime.now(UTC),
        )
        await target.wait_for_hits(key, 1)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Another worker takes over once the dead one's heartbeat is missed.
    workers, deps = build_workers(
        temporal, sessions, settings.model_copy(update={"task_queue": queue})
    )
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        result = await temporal.get_workflow_handle(workflow_id, run_id=run_id).result()
        assert result["status"] == "succeeded"
        async with sessions() as session:
            rows = await crud.executions_of_runs(session, runs=[(workflow_id, run_id or "")])
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs)
        await deps.close()
    [row] = rows
    messages = [entry["message"] for entry in row.logs]
    assert row.status == "succeeded" and row.attempts == 2
    assert str(row.id) == result["execution_id"] and row.result["status_code"] == 200
    assert messages[0] == "attempt 1 of 3 started"
    assert any(m.startswith("attempt 1 ended without a result") for m in messages), messages
    assert "attempt 2 of 3 started" in messages and messages[-1] == "succeeded"
    assert target.hits(key) == 2


async def test_an_unreadable_input_fails_the_run_visibly(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    worker: None,  # noqa: ARG001 - the run needs a worker
) -> None:
    async with sessions.begin() as session:
        owner = await crud.create_user(session, name=f"unreadable-{uuid.uuid4().hex[:8]}")
        spec = TaskSpec.model_validate(recurring("http://127.0.0.1:9/", interval_seconds=86400))
        task = await crud.create_task(session, user_id=owner.id, spec=spec)
    # A schedule written by another version: a field this code does not know.
    data = {"task_id": str(task.id), "user_id": str(owner.id), "task": {"no": "such"}}
    raw = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(data).encode()))
    handle = await temporal.start_workflow(
        "TaskWorkflow",
        raw,
        id=f"task-{task.id}-manual-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        search_attributes=search_attributes(task.id, owner.id),
    )
    try:
        await asyncio.wait_for(handle.result(), timeout=30)
    except WorkflowFailureError as error:
        assert "InvalidRunInput" in str(error.cause)
    else:
        raise AssertionError("the run should fail")

    async def recorded() -> Task | None:
        async with sessions() as session:
            rows = await crud.executions_of_runs(
                session, runs=[(handle.id, handle.result_run_id or "")]
            )
            stored = await session.get(Task, task.id)
        return stored if rows and rows[0].status == "failed" and stored else None

    stored = await eventually(recorded)
    async with sessions() as session:
        [row] = await crud.executions_of_runs(
            session, runs=[(handle.id, handle.result_run_id or "")]
        )
    assert row.error is not None and row.error["type"] == "InvalidRunInput"
    assert stored.run_count == 1 and stored.last_status == "failed"
