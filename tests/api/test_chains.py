"""Task chains end to end: actions, a sleep, conditions, a failing step that continues, a wait
resumed through its URL, a wait that times out, another task as a step, cancellation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring, webhook_action


def chain_task(steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    body = recurring("http://unused.invalid/", interval_seconds=86400, **fields)
    body["action"] = {"type": "task_chain", "config": {"steps": steps}}
    return body


async def _start(user: ApiUser, task_id: str) -> str:
    started = await user.post(f"/api/tasks/{task_id}/run")
    assert started.status_code == 202, started.text
    execution_id: str = started.json()["execution_id"]
    return execution_id


async def _step(user: ApiUser, execution_id: str, step_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        execution = await user.execution(execution_id)
        if execution is None:
            return None
        for step in execution["steps"]:
            if step["id"] == step_id and step["status"] == status:
                return execution
        return None

    return await eventually(reached, timeout=45)


async def _ended(user: ApiUser, execution_id: str) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        execution = await user.execution(execution_id)
        return execution if execution and execution["status"] != "running" else None

    return await eventually(ended, timeout=60)


async def test_a_chain_with_an_action_a_wait_a_failure_a_sleep_and_conditions(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    steps: list[dict[str, Any]] = [
        {
            "id": "ask",
            "action": webhook_action(
                f"{target.url}/echo/{key}-ask",
                body={"approve_at": "{{ steps.approve.resume_url }}"},
            ),
        },
        {"id": "approve", "wait_for_webhook": {"timeout_seconds": 120}},
        {
            "id": "flaky",
            "action": webhook_action(f"{target.url}/seq/{key}-flaky?codes=404"),
            "on_failure": "continue",
        },
        {"id": "pause", "sleep_seconds": 1},
        {
            "id": "ship",
            "condition": {"path": "steps.approve.output.ok", "op": "eq", "value": True},
            "action": webhook_action(
                f"{target.url}/echo/{key}-ship",
                body={
                    "note": "{{ steps.approve.output.note }}",
                    "asked": "{{ steps.ask.output.status_code }}",
                    "flaky": "{{ steps.flaky.status }}",
                },
            ),
        },
        {
            "id": "never",
            "condition": {"path": "steps.flaky.status", "op": "eq", "value": "succeeded"},
            "action": webhook_action(f"{target.url}/ok/{key}-never"),
        },
    ]
    task = await user.create_task(chain_task(steps, retry={"max_attempts": 1}))
    execution_id = await _start(user, task["id"])
    # The wait step's URL exists from the start and reached the first step's request.
    waiting = await _step(user, execution_id, "approve", "waiting")
    assert [step["id"] for step in waiting["steps"]] == [s["id"] for s in steps]
    assert waiting["status"] == "running"
    by_id = {step["id"]: step for step in waiting["steps"]}
    assert by_id["ask"]["status"] == "succeeded" and by_id["flaky"]["status"] == "pending"
    resume_url = by_id["approve"]["resume_url"]
    assert resume_url and "/api/resume/" in resume_url
    [asked] = target.requests[f"{key}-ask"]
    assert json.loads(asked["body"]) == {"approve_at": resume_url}
    path = "/api/resume/" + resume_url.rsplit("/", 1)[1]
    resumed = await user.client.post(path, json={"ok": True, "note": "looks good"})
    assert resumed.status_code == 202, resumed.text
    again = await user.client.post(path, json={"ok": False})
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    forged = path[:-4] + ("AAAA" if not path.endswith("AAAA") else "BBBB")
    assert (await user.client.post(forged, json={})).status_code == 404

    done = await _ended(user, execution_id)
    assert done["status"] == "succeeded", done
    statuses = {step["id"]: step["status"] for step in done["steps"]}
    assert statuses == {
        "ask": "succeeded",
        "approve": "succeeded",
        "flaky": "failed",
        "pause": "succeeded",
        "ship": "succeeded",
        "never": "skipped",
    }
    by_id = {step["id"]: step for step in done["steps"]}
    assert by_id["approve"]["output"] == {"ok": True, "note": "looks good"}
    assert by_id["flaky"]["error"]["type"] == "HttpStatusError"
    assert by_id["never"]["error"]["type"] == "ConditionNotMet"
    assert all(by_id[s]["started_at"] and by_id[s]["finished_at"] for s in ("ask", "pause"))
    [shipped] = target.requests[f"{key}-ship"]
    assert json.loads(shipped["body"]) == {"note": "looks good", "asked": "200", "flaky": "failed"}
    assert target.hits(f"{key}-never") == 0
    assert done["result"]["steps"]["approve"] == {
        "status": "succeeded",
        "output": {"ok": True, "note": "looks good"},
    }
    # A chain that ended: its URL is spent.
    assert (await user.client.post(path, json={})).status_code == 409


async def test_a_wait_that_times_out_stops_the_chain(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    steps: list[dict[str, Any]] = [
        {"id": "wait", "wait_for_webhook": {"timeout_seconds": 1}},
        {"id": "after", "action": webhook_action(f"{target.url}/ok/{key}")},
    ]
    task = await user.create_task(chain_task(steps))
    done = await _ended(user, await _start(user, task["id"]))
    assert done["status"] == "failed"
    assert done["error"]["type"] == "WaitTimedOut"
    assert done["error"]["message"].startswith("step wait: ")
    statuses = {step["id"]: step["status"] for step in done["steps"]}
    assert statuses == {"wait": "failed", "after": "skipped"}
    assert target.hits(key) == 0
    url = done["steps"][0]["resume_url"]
    late = await user.client.post("/api/resume/" + url.rsplit("/", 1)[1], json={})
    assert late.status_code == 409


async def test_a_step_runs_another_of_the_users_tasks(
    user: ApiUser, make_user: Callable[[], Awaitable[ApiUser]], target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    other = await user.create_task(
        recurring(f"{target.url}/ok/{key}", interval_seconds=86400, name="the other")
    )
    steps: list[dict[str, Any]] = [
        {"id": "other", "task_id": other["id"]},
        {
            "id": "report",
            "action": webhook_action(
                f"{target.url}/echo/{key}-report",
                body={
                    "status": "{{ steps.other.output.status }}",
                    "hit": "{{ steps.other.output.result.body.hit }}",
                },
            ),
        },
    ]
    task = await user.create_task(chain_task(steps))
    done = await _ended(user, await _start(user, task["id"]))
    assert done["status"] == "succeeded", done
    [reported] = target.requests[f"{key}-report"]
    assert json.loads(reported["body"]) == {"status": "succeeded", "hit": "1"}
    [run] = await user.executions(other["id"])
    assert run["trigger"] == "chain" and run["status"] == "succeeded"
    # Another user's task is refused where it is named, at save and in validation.
    stranger = await make_user()
    refused = await stranger.post("/api/tasks", json=chain_task(steps))
    assert refused.status_code == 422, refused.text
    loc = ["body", "action", "task_chain", "config", "steps", 0, "task_id"]
    assert loc in [error["loc"] for error in refused.json()["errors"]]
    report = (await stranger.post("/api/tasks/validate", json=chain_task(steps))).json()
    assert report["valid"] is False and loc in [error["loc"] for error in report["errors"]]


async def test_cancelling_a_chain_cancels_its_running_step(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    steps: list[dict[str, Any]] = [
        {"id": "first", "action": webhook_action(f"{target.url}/ok/{key}")},
        {"id": "nap", "sleep_seconds": 3600},
        {"id": "later", "action": webhook_action(f"{target.url}/ok/{key}-later")},
    ]
    task = await user.create_task(chain_task(steps))
    execution_id = await _start(user, task["id"])
    await _step(user, execution_id, "nap", "running")
    cancelled = await user.post(f"/api/executions/{execution_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    done = await _ended(user, execution_id)
    assert done["status"] == "cancelled"
    statuses = {step["id"]: step["status"] for step in done["steps"]}
    assert statuses == {"first": "succeeded", "nap": "cancelled", "later": "cancelled"}
    await asyncio.sleep(1)
    assert target.hits(f"{key}-later") == 0


async def test_invalid_chains_are_located_422s(user: ApiUser) -> None:
    cases: list[tuple[list[dict[str, Any]], list[Any]]] = [
        ([], ["body", "action", "task_chain", "config", "steps"]),
        (
            [{"id": "a", "sleep_seconds": 1, "wait_for_webhook": {}}],
            ["body", "action", "task_chain", "config", "steps", 0],
        ),
        (
            [{"id": "a", "sleep_seconds": 1}, {"id": "a", "sleep_seconds": 2}],
            ["body", "action", "task_chain", "config", "steps", 1, "id"],
        ),
        (
            [
                {
                    "id": "a",
                    "sleep_seconds": 1,
                    "condition": {"path": "steps.b.status", "op": "exists"},
                },
                {"id": "b", "sleep_seconds": 1},
            ],
            ["body", "action", "task_chain", "config", "steps", 0, "condition", "path"],
        ),
        (
            [{"id": "a", "action": {"type": "task_chain", "config": {"steps": []}}}],
            ["body", "action", "task_chain", "config", "steps", 0, "action"],
        ),
    ]
    for steps, loc in cases:
        response = await user.post("/api/tasks", json=chain_task(steps))
        assert response.status_code == 422, (steps, response.text)
        assert loc in [error["loc"] for error in response.json()["errors"]], response.text
