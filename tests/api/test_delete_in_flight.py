"""Deleting a task ends everything of it: its runs in flight are cancelled (a chain waiting
for its resume URL too, whose URL then answers 404), the deliveries its trigger workflow
had accepted but not started are dropped (and listed in that workflow's result), and a run
that starts as the task goes gets none of its owner's secrets."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
)
from temporalio.exceptions import ApplicationError

from schema.orm import Task
from schema.temporal_ids import trigger_workflow_id
from tests.api.test_chains import _start, _step, chain_task
from tests.api.test_webhook_triggers import _hook, _path, trigger_task
from tests.conftest import ApiUser, eventually
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring, webhook_action

ENDED = (
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
)


async def _status(temporal: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await temporal.get_workflow_handle(workflow_id).describe()).status


async def _ends(temporal: Client, workflow_id: str) -> WorkflowExecutionStatus:
    async def ended() -> WorkflowExecutionStatus | None:
        status = await _status(temporal, workflow_id)
        return status if status in ENDED else None

    return await eventually(ended)


async def _ends_cancelled(temporal: Client, workflow_id: str) -> None:
    assert await _ends(temporal, workflow_id) == WorkflowExecutionStatus.CANCELED


async def test_deleting_a_task_cancels_its_waiting_chain_and_its_resume_url(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    put = await user.request("PUT", "/api/secrets/AFTER_TOKEN", json={"value": "s3cr3t-after"})
    assert put.status_code in (200, 201), put.text
    steps: list[dict[str, Any]] = [
        {"id": "approve", "wait_for_webhook": {"timeout_seconds": 3600}},
        {
            "id": "after",
            "action": webhook_action(
                f"{target.url}/ok/{key}", headers={"X-Token": "{{ secrets.AFTER_TOKEN }}"}
            ),
        },
    ]
    task = await user.create_task(chain_task(steps))
    execution_id = await _start(user, task["id"])
    execution = await _step(user, execution_id, "approve", "waiting")
    resume_url = next(s["resume_url"] for s in execution["steps"] if s["id"] == "approve")

    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    resume_path = "/api/resume/" + resume_url.rsplit("/", 1)[1]
    answer = await user.client.post(resume_path, json={"ok": True})
    assert answer.status_code == 404, answer.text
    await _ends_cancelled(temporal, execution["workflow_id"])
    # A cancelled chain fails with type Cancelled, which its run records as cancelled.
    await _ends(temporal, f"chain-{execution_id}")
    again = await user.client.post(resume_path, json={"ok": True})
    assert again.status_code == 404, again.text
    await asyncio.sleep(1)
    assert target.hits(key) == 0


async def test_deleting_a_trigger_task_drops_its_queue_and_cancels_its_runs(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    """Three deliveries accepted with concurrency 1: the first runs (slowly), two wait. The
    delete cancels the first and drops the two; the trigger workflow's result says so."""
    key = uuid.uuid4().hex
    task = await user.create_task(
        trigger_task(f"{target.url}/slow/{key}?seconds=60", concurrency=1)
    )
    hook = await _hook(user, task["id"], "token")
    accepted = []
    for n in range(3):
        headers = {"X-Cronpilot-Token": hook["secret"], "X-Cronpilot-Delivery": f"d-{n}"}
        response = await user.client.post(_path(hook), json={"n": n}, headers=headers)
        assert response.status_code == 202, response.text
        accepted.append(response.json()["workflow_id"])
    await target.wait_for_hits(key, 1)  # the first is running, the others wait

    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    result = await temporal.get_workflow_handle(trigger_workflow_id(task["id"])).result()
    assert result["ended"] == "the task was deleted"
    assert result["dropped_deliveries"] == ["d-1", "d-2"]
    assert result["cancelled_runs"] == [accepted[0]]
    await _ends_cancelled(temporal, accepted[0])
    for workflow_id in accepted[1:]:
        with pytest.raises(Exception, match="not found"):
            await _status(temporal, workflow_id)
    await asyncio.sleep(1)
    assert target.hits(key) == 1
    headers = {"X-Cronpilot-Token": hook["secret"], "X-Cronpilot-Delivery": "d-late"}
    late = await user.client.post(_path(hook), json={}, headers=headers)
    assert late.status_code == 404, late.text


async def test_deleting_a_task_cancels_its_manual_runs_without_notifying(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(
        recurring(
            f"{target.url}/slow/{key}?seconds=60",
            interval_seconds=3600,
            schedule={"overlap": "allow_all"},
            notify={"on": ["always"], "webhook_url": f"{target.url}/ok/{key}-notify"},
        )
    )
    first = await user.post(f"/api/tasks/{task['id']}/run")
    second = await user.post(f"/api/tasks/{task['id']}/run")
    assert first.status_code == second.status_code == 202
    await target.wait_for_hits(key, 2)
    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    for started in (first, second):
        await _ends_cancelled(temporal, started.json()["workflow_id"])
    await asyncio.sleep(2)  # a notification would have been sent by now
    assert target.hits(f"{key}-notify") == 0


async def test_deleting_a_task_cancels_the_run_its_schedule_just_started(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    """A scheduled run is found through the schedule itself (paused, then described),
    not through visibility, which may not list a run that started a moment ago."""
    key = uuid.uuid4().hex
    task = await user.create_task(
        recurring(f"{target.url}/slow/{key}?seconds=60", interval_seconds=1)
    )
    await target.wait_for_hits(key, 1)
    handle = temporal.get_schedule_handle(task["temporal"]["schedule_id"])
    [running] = (await handle.describe()).info.running_actions
    assert isinstance(running, ScheduleActionExecutionStartWorkflow)
    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    await _ends_cancelled(temporal, running.workflow_id)


async def test_a_run_whose_task_is_gone_gets_no_secrets(harness: ActionHarness) -> None:
    await harness.put_secret("TOKEN", "t0ken-value")
    action = webhook_action("http://127.0.0.1:9/", headers={"X-Token": "{{ secrets.TOKEN }}"})
    task_id = await harness.task()
    async with harness.sessions.begin() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        await session.delete(task)
    failure = await failure_of(harness, action)
    assert isinstance(failure, ApplicationError)
    assert failure.type == "TaskDeleted" and failure.non_retryable
