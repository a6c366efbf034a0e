"""Run now honours the task's overlap policy against the runs in flight."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring

SLOW = 3.0


async def _task(user: ApiUser, url: str, overlap: str) -> dict[str, Any]:
    body = recurring(url, interval_seconds=86400)
    body["schedule"]["overlap"] = overlap
    return await user.create_task(body)


async def _run(user: ApiUser, task: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await user.post(f"/api/tasks/{task['id']}/run")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def _settled(user: ApiUser, task_id: str, count: int) -> list[dict[str, Any]] | None:
    runs = await user.executions(task_id)
    finished = [r for r in runs if r["status"] != "running"]
    return finished if len(finished) >= count else None


async def test_skip_refuses_while_a_run_is_in_flight(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    task = await _task(user, f"{target.url}/slow/{key}?seconds={SLOW}", "skip")
    first, second, third = await asyncio.gather(*(_run(user, task) for _ in range(3)))
    statuses = sorted(s for s, _ in (first, second, third))
    assert statuses == [202, 409, 409], (first, second, third)
    refused = next(body for status, body in (first, second, third) if status == 409)
    assert refused["type"] == "about:blank" and "skip" in refused["detail"]
    started = next(body for status, body in (first, second, third) if status == 202)
    await temporal.get_workflow_handle(started["workflow_id"]).result()
    assert target.hits(key) == 1
    # Once it ended, run now works again.
    status, _ = await _run(user, task)
    assert status == 202


async def test_skip_sees_a_scheduled_run_too(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=10", interval_seconds=86400)
    task = await user.create_task(body)
    await temporal.get_schedule_handle(f"task-{task['id']}").trigger()
    await target.wait_for_hits(key, 1)
    status, refused = await _run(user, task)
    assert status == 409, refused


@pytest.mark.parametrize("overlap", ["buffer_one", "buffer_all"])
async def test_buffer_queues_runs_one_after_another(
    user: ApiUser, target: HttpTarget, temporal: Client, overlap: str
) -> None:
    key = uuid.uuid4().hex
    task = await _task(user, f"{target.url}/slow/{key}?seconds={SLOW}", overlap)
    answers = []
    for _ in range(3):  # one at a time, so the order is known
        answers.append(await _run(user, task))
    expected = [202, 202, 409] if overlap == "buffer_one" else [202, 202, 202]
    assert [status for status, _ in answers] == expected, answers
    started = [body for status, body in answers if status == 202]
    for body in started:
        await temporal.get_workflow_handle(body["workflow_id"]).result()
    hits = target.requests[key]
    assert len(hits) == len(started)
    for earlier, later in zip(hits, hits[1:], strict=False):
        assert later["at"] >= earlier["at"] + SLOW - 0.1, "queued runs overlapped"
    runs = await eventually(lambda: _settled(user, task["id"], len(started)))
    assert {r["status"] for r in runs} == {"succeeded"}
    queued = [r for r in runs if r["workflow_id"] != started[0]["workflow_id"]]
    assert all(r["logs"][0]["message"].startswith("queued by the overlap policy") for r in queued)


async def test_allow_all_runs_at_once(user: ApiUser, target: HttpTarget, temporal: Client) -> None:
    key = uuid.uuid4().hex
    task = await _task(user, f"{target.url}/slow/{key}?seconds={SLOW}", "allow_all")
    answers = await asyncio.gather(*(_run(user, task) for _ in range(3)))
    assert [status for status, _ in answers] == [202, 202, 202]
    await target.wait_for_hits(key, 3, timeout=SLOW * 2)  # all three in flight together
    for _, body in answers:
        await temporal.get_workflow_handle(body["workflow_id"]).result()


@pytest.mark.parametrize("overlap", ["cancel_other", "terminate_other"])
async def test_other_policies_stop_the_run_in_flight(
    user: ApiUser, target: HttpTarget, temporal: Client, overlap: str
) -> None:
    key = uuid.uuid4().hex
    task = await _task(user, f"{target.url}/slow/{key}?seconds=60&slow_hits=1", overlap)
    status, first = await _run(user, task)
    assert status == 202
    await target.wait_for_hits(key, 1)
    status, second = await _run(user, task)
    assert status == 202
    result = await temporal.get_workflow_handle(second["workflow_id"]).result()
    assert result["status"] == "succeeded"
    old = temporal.get_workflow_handle(first["workflow_id"], run_id=first["run_id"])
    expected = {
        "cancel_other": WorkflowExecutionStatus.CANCELED,
        "terminate_other": WorkflowExecutionStatus.TERMINATED,
    }
    assert (await old.describe()).status == expected[overlap]
    runs = {r["workflow_id"]: r for r in await eventually(lambda: _settled(user, task["id"], 2))}
    assert runs[second["workflow_id"]]["status"] == "succeeded"
    assert runs[second["workflow_id"]]["result"]["status_code"] == 200
    assert runs[first["workflow_id"]]["status"] == "cancelled"
    error_type = {"cancel_other": "Cancelled", "terminate_other": "Terminated"}[overlap]
    assert runs[first["workflow_id"]]["error"]["type"] == error_type
