"""Execution control and feedback: run now answers with its execution, a running execution
shows its logs as they happen and can be cancelled, a run can be rerun, bulk operations
report each id's own trouble, and pause and resume move `updated_at`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema.orm import Task
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring

URL = "http://127.0.0.1:9/"


async def test_pause_and_resume_move_updated_at(user: ApiUser) -> None:
    task = await user.create_task(recurring(URL, interval_seconds=3600))
    paused = (await user.post(f"/api/tasks/{task['id']}/pause")).json()
    resumed = (await user.post(f"/api/tasks/{task['id']}/resume")).json()
    stamps = [datetime.fromisoformat(t["updated_at"]) for t in (task, paused, resumed)]
    assert stamps[0] < stamps[1] < stamps[2]


async def test_bulk_reports_each_ids_trouble_and_processes_the_others(
    user: ApiUser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = await user.create_task(recurring(URL, interval_seconds=3600, name="first"))
    broken = await user.create_task(recurring(URL, interval_seconds=3600, name="broken"))
    last = await user.create_task(recurring(URL, interval_seconds=3600, name="last"))
    # A row this version cannot read (hand-edited, or written by another version).
    async with sessions.begin() as session:
        await session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(broken["id"]))
            .values(schedule={"interval_seconds": 3600, "timezone": "Not/AZone"})
        )
    ids = [first["id"], broken["id"], last["id"]]
    response = await user.post("/api/tasks/bulk-pause", json={"ids": ids})
    assert response.status_code == 200, response.text
    results = {r["id"]: r for r in response.json()["results"]}
    assert results[first["id"]]["ok"] is True and results[last["id"]]["ok"] is True
    assert results[broken["id"]]["ok"] is False
    assert "correlation id" in results[broken["id"]]["error"]
    for task in (first, last):
        assert (await user.get(f"/api/tasks/{task['id']}")).json()["status"] == "paused"
    async with sessions.begin() as session:  # other tests' reconciles need not meet it
        await session.execute(delete(Task).where(Task.id == uuid.UUID(broken["id"])))


def _messages(execution: dict[str, Any]) -> list[str]:
    return [entry["message"] for entry in execution["logs"]]


async def test_run_now_answers_with_its_execution_and_link(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(recurring(f"{target.url}/ok/{key}", interval_seconds=86400))
    response = await user.post(f"/api/tasks/{task['id']}/run")
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["workflow_id"] in started["ui_url"] and started["run_id"] in started["ui_url"]
    done = await eventually(lambda: user.execution(started["execution_id"], "succeeded"))
    assert (done["workflow_id"], done["run_id"]) == (started["workflow_id"], started["run_id"])
    assert done["trigger"] == "manual" and done["rerun_of"] is None


async def test_a_running_execution_shows_its_logs_and_can_be_cancelled(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=120", interval_seconds=86400)
    task = await user.create_task(body)
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    await target.wait_for_hits(key)

    async def live() -> dict[str, Any] | None:
        running = await user.execution(started["execution_id"], "running")
        if running and any(m.startswith("attempt 1 of") for m in _messages(running)):
            return running
        return None

    await eventually(live)
    response = await user.post(f"/api/executions/{started['execution_id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelling"
    ended = await eventually(lambda: user.execution(started["execution_id"], "cancelled"))
    assert any(m.startswith("attempt 1 of") for m in _messages(ended))
    again = await user.post(f"/api/executions/{started['execution_id']}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_rerun_runs_the_task_again_and_links_the_runs(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(recurring(f"{target.url}/ok/{key}", interval_seconds=86400))
    first = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    await eventually(lambda: user.execution(first["execution_id"], "succeeded"))
    response = await user.post(f"/api/executions/{first['execution_id']}/rerun")
    assert response.status_code == 202, response.text
    second = response.json()
    assert second["execution_id"] != first["execution_id"]
    rerun = await eventually(lambda: user.execution(second["execution_id"], "succeeded"))
    assert rerun["rerun_of"] == first["execution_id"] and rerun["trigger"] == "manual"
    assert target.hits(key) == 2
    listed = await user.get(f"/api/tasks/{task['id']}/executions")
    assert {item["rerun_of"] for item in listed.json()["items"]} == {None, first["execution_id"]}
    missing = await user.post(f"/api/executions/{uuid.uuid4()}/rerun")
    assert missing.status_code == 404


async def test_all_executions_of_a_user_filtered_and_paged(
    user: ApiUser, make_user: Callable[[], Awaitable[ApiUser]]
) -> None:
    """GET /api/executions: the web UI's calendar (past runs) and running badges read it."""
    once = {"max_attempts": 1}
    first = await user.create_task(recurring(URL, interval_seconds=3600, name="a", retry=once))
    second = await user.create_task(recurring(URL, interval_seconds=3600, name="b", retry=once))
    before = datetime.now(UTC)
    ran = [await user.run_to_end(task["id"]) for task in (first, second, first)]
    after = datetime.now(UTC)

    everything = (await user.get("/api/executions")).json()
    assert [run["id"] for run in everything["items"]] == [run["id"] for run in reversed(ran)]
    assert {"logs", "result", "steps"}.isdisjoint(everything["items"][0])
    assert everything["items"][0]["temporal"]["ui_url"]

    of_first = (await user.get("/api/executions", params={"task_id": first["id"]})).json()
    assert [run["id"] for run in of_first["items"]] == [ran[2]["id"], ran[0]["id"]]
    failed = (await user.get("/api/executions", params={"status": "failed"})).json()
    assert len(failed["items"]) == 3
    assert (await user.get("/api/executions", params={"status": "running"})).json()["items"] == []

    window = {"from": ran[1]["started_at"], "to": ran[2]["started_at"]}  # [from, to)
    inside = (await user.get("/api/executions", params=window)).json()
    assert [run["id"] for run in inside["items"]] == [ran[1]["id"]]
    span = {"from": before.isoformat(), "to": after.isoformat()}
    assert len((await user.get("/api/executions", params=span)).json()["items"]) == 3

    page = (await user.get("/api/executions", params={"limit": 2})).json()
    rest = (await user.get("/api/executions", params={"cursor": page["next_cursor"]})).json()
    assert [run["id"] for run in page["items"] + rest["items"]] == [
        run["id"] for run in reversed(ran)
    ]
    assert rest["next_cursor"] is None

    stranger = await make_user()
    assert (await stranger.get("/api/executions")).json()["items"] == []
    assert (await stranger.get("/api/executions", params={"task_id": first["id"]})).json()[
        "items"
    ] == []

    for params, where in (
        ({"from": "yesterday"}, "from"),
        ({"from": after.isoformat(), "to": before.isoformat()}, "to"),
        ({"status": "finished"}, "status"),
    ):
        refused = await user.get("/api/executions", params=params)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["query", where]
