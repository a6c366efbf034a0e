"""What the worker's log (the dev terminal) shows of failing actions: one line per failed
attempt of an expected failure; the traceback, once, of an unexpected one."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from activities._action import ActionDeps, ActionRun, action_activity
from activities.history import HistoryActivities
from schema.settings import Settings
from schema.tasks import TaskRunInput, TaskSpec
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring
from workflows.history import RecordExecutionWorkflow
from workflows.task import TaskWorkflow

ACTIVITY_LOGGER = "temporalio.activity"


def _records_of(caplog: pytest.LogCaptureFixture, workflow_id: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == ACTIVITY_LOGGER
        and getattr(record, "temporal_activity", {}).get("workflow_id") == workflow_id
    ]


def _printed(record: logging.LogRecord) -> str:
    """The record as a terminal shows it, traceback included."""
    return logging.Formatter("%(levelname)s %(name)s %(message)s").format(record)


async def test_an_expected_failure_is_one_line_per_attempt(
    user: ApiUser, target: HttpTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ACTIVITY_LOGGER)
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/error_page/{key}?code=503", retry=fast_retry(2))
    task = await user.create_task({**body, "schedule": {"interval_seconds": 86400}})
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()

    async def final() -> dict[str, Any] | None:
        runs = await user.executions(task["id"])
        return runs[0] if runs and runs[0]["status"] != "running" else None

    run = await eventually(final, timeout=45)
    assert run["status"] == "failed" and run["attempts"] == 2
    lines = [_printed(record) for record in _records_of(caplog, started["workflow_id"])]
    assert len(lines) == 2, lines
    for attempt, line in enumerate(lines, start=1):
        assert "\n" not in line and "Traceback" not in line
        assert f"run_webhook attempt {attempt} of {started['workflow_id']} failed" in line
        assert "(retryable): HttpStatusError: unexpected HTTP 503" in line
        assert "Service Unavailable Maintenance & upgrades" in line and "<" not in line


async def test_an_unexpected_error_logs_its_traceback_once(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    target: HttpTarget,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=ACTIVITY_LOGGER)

    async def broken(_run: ActionRun, _config: Any) -> Any:
        raise RuntimeError("the handler broke")

    queue = f"log-{uuid.uuid4().hex[:8]}"
    deps = ActionDeps(settings, sessions)
    history = HistoryActivities(sessions, temporal)
    spec = TaskSpec.model_validate(recurring(f"{target.url}/ok/x", retry=fast_retry(1)))
    workflow_id = f"task-{uuid.uuid4()}-manual-{uuid.uuid4().hex}"
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=[TaskWorkflow, RecordExecutionWorkflow],
        activities=[
            history.record_execution_started,
            history.record_execution_finished,
            history.write_execution_record,
            action_activity("run_webhook", broken, deps),
        ],
    ):
        # A task that has no row: nothing is recorded, the run still fails as it should.
        handle = await temporal.start_workflow(
            "TaskWorkflow",
            TaskRunInput(
                task_id=uuid.uuid4(),
                user_id=uuid.uuid4(),
                task=spec,
                trigger="manual",
                scheduled_at=datetime.now(UTC),
            ),
            id=workflow_id,
            task_queue=queue,
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    await deps.close()
    printed = [_printed(record) for record in _records_of(caplog, workflow_id)]
    traces = [text for text in printed if "Traceback" in text]
    assert len(traces) == 1, printed
    assert "in broken" in traces[0] and "RuntimeError: the handler broke" in traces[0]
    [failed] = [text for text in printed if "failed (retryable)" in text]
    assert f"run_webhook attempt 1 of {workflow_id} failed" in failed and "\n" not in failed
    assert failed.endswith("RuntimeError: the handler broke")
