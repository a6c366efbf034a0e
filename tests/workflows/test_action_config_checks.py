"""Configs checked at save run again once rendered: a request value that a template makes
unsendable fails the run at once (``InvalidConfig``, not retried, nothing sent); a config
saved or scheduled before a check existed still runs, and fails the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from schema import crud
from schema.actions import STORED
from schema.orm import Task
from schema.settings import Settings
from schema.tasks import TaskRunInput, TaskSpec
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring


async def test_a_rendered_header_with_a_line_break_fails_at_once(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/ok/{key}",
        interval_seconds=86400,
        retry=fast_retry(3),
        config={"headers": {"X-Run": "{{ run.trigger }}\r\nX-Injected: yes"}},
    )
    task = await user.create_task(body)  # a template: checked once rendered
    run = await user.run_to_end(task["id"])
    assert run["status"] == "failed" and run["attempts"] == 1
    assert run["error"]["type"] == "InvalidConfig"
    assert "headers.X-Run" in run["error"]["message"]
    assert target.hits(key) == 0


async def test_a_config_stored_before_the_checks_still_runs_and_fails_as_invalid_config(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    worker: None,  # noqa: ARG001 - the run needs a polling worker
) -> None:
    key = uuid.uuid4().hex
    # As an older version saved it, and as its schedule carries it: a literal port that the
    # API now refuses.
    body = recurring(f"http://127.0.0.1:70000/ok/{key}", retry=fast_retry(3))
    spec = TaskSpec.model_validate(body, context=STORED)
    async with sessions.begin() as session:
        owner = await crud.create_user(session, name=f"stored-{key[:8]}")
        task = await crud.create_task(session, user_id=owner.id, spec=spec)
    async with sessions() as session:
        row = await session.get(Task, task.id)
        assert row is not None and crud.task_spec(row) == spec, "a stored task still reads"
    handle = await temporal.start_workflow(
        "TaskWorkflow",
        TaskRunInput(
            task_id=task.id,
            user_id=owner.id,
            task=spec,
            trigger="manual",
            scheduled_at=datetime.now(UTC),
        ),
        id=f"task-{task.id}-manual-{key}",
        task_queue=settings.task_queue,
    )
    try:
        await handle.result()
    except WorkflowFailureError as error:
        assert "InvalidConfig" in str(error.cause)
    else:
        raise AssertionError("the run succeeded")

    async def recorded() -> list[Any] | None:
        async with sessions() as session:
            runs = [(handle.id, handle.result_run_id or "")]
            rows = await crud.executions_of_runs(session, runs=runs)
        return [r for r in rows if r.status != "running"] or None

    [row] = await eventually(recorded)
    assert (row.status, row.attempts, row.error["type"]) == ("failed", 1, "InvalidConfig")
    assert "url" in row.error["message"] and "65535" in row.error["message"]
