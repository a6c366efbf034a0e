"""Configs are bounded at save, well inside what every layer decodes: a task nests at most
MAX_JSON_DEPTH levels and weighs at most MAX_TASK_BYTES as JSON. Beyond, a located 422, and
nothing changes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from temporalio.client import Client

from schema.tasks import MAX_JSON_DEPTH, MAX_TASK_BYTES
from tests.conftest import ApiUser
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def _raw_nested(levels: int) -> str:
    return '{"a":' * levels + '"leaf"' + "}" * levels


async def _count(user: ApiUser) -> int:
    return len((await user.get("/api/tasks", params={"limit": 200})).json()["items"])


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 250, 260, 900])
async def test_a_body_nested_too_deep_is_a_located_422(user: ApiUser, levels: int) -> None:
    before = await _count(user)
    body = recurring("http://127.0.0.1:9/", interval_seconds=86400)
    body["action"]["config"]["body"] = "BODY"
    text = json.dumps(body).replace('"BODY"', _raw_nested(levels))
    response = await user.post(
        "/api/tasks", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["loc"][:4] == ["body", "action", "config", "body"]
    assert "nested deeper than" in error["msg"]
    assert await _count(user) == before


async def test_nesting_within_the_limit_is_accepted_and_runs(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/ok/{key}", interval_seconds=86400)
    body["action"]["config"]["body"] = _nested(MAX_JSON_DEPTH - 4)  # action.config.body.a...
    task = await user.create_task(body)
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    result = await temporal.get_workflow_handle(started["workflow_id"]).result()
    assert result["status"] == "succeeded"
    assert json.loads(target.requests[key][0]["body"]) == body["action"]["config"]["body"]


async def test_a_task_too_large_is_a_located_422(user: ApiUser) -> None:
    body = recurring("http://127.0.0.1:9/", interval_seconds=86400)
    body["action"]["config"]["body"] = {"blob": "x" * MAX_TASK_BYTES}
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "action", "config", "body", "blob"]
    assert str(MAX_TASK_BYTES) in error["msg"]


async def test_patch_and_validate_are_bounded_too(user: ApiUser) -> None:
    task = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=86400))
    deep = {"action": {"type": "webhook", "config": {"url": "http://x/", "body": _nested(300)}}}
    patched = await user.request("PATCH", f"/api/tasks/{task['id']}", json=deep)
    assert patched.status_code == 422, patched.text
    unchanged = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert unchanged["action"] == task["action"] and unchanged["updated_at"] == task["updated_at"]
    report = await user.post("/api/tasks/validate", json={**task, **deep})
    assert report.status_code == 200, report.text
    assert report.json()["valid"] is False
    assert "nested deeper than" in report.json()["errors"][0]["msg"]
