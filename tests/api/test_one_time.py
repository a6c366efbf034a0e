"""A one-time task never goes silent: paused across its run_at, then resumed, it runs at
once within its catch-up window and is `failed` with a `Missed` run after it; a lost
schedule is settled the same way by reconcile; a finished task stays editable."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.reconcile import reconcile
from schema.settings import Settings
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import one_time


async def _status(user: ApiUser, task_id: str, *wanted: str) -> dict[str, Any] | None:
    task: dict[str, Any] = (await user.get(f"/api/tasks/{task_id}")).json()
    return task if task["status"] in wanted else None


async def _until_past(task: dict[str, Any], seconds: float) -> None:
    """Sleep until ``seconds`` after the task's run_at (by the wall clock it was set by)."""
    run_at = datetime.fromisoformat(task["schedule"]["run_at"])
    await asyncio.sleep(max(0.0, (run_at - datetime.now(run_at.tzinfo)).total_seconds() + seconds))


async def test_resumed_within_the_catch_up_window_it_runs_at_once(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = one_time(f"{target.url}/ok/{key}", in_seconds=2)
    body["schedule"]["catchup_window_seconds"] = 600
    task = await user.create_task(body)
    assert (await user.post(f"/api/tasks/{task['id']}/pause")).status_code == 200
    await _until_past(task, 2)
    assert target.hits(key) == 0, "a paused task ran"

    resumed = await user.post(f"/api/tasks/{task['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    done = await eventually(lambda: _status(user, task["id"], "completed", "failed"))
    assert done["status"] == "completed"
    [run] = await user.executions(task["id"])
    assert run["trigger"] == "schedule" and run["status"] == "succeeded"
    assert datetime.fromisoformat(run["scheduled_at"]) == datetime.fromisoformat(
        task["schedule"]["run_at"]
    )
    # Resuming again (a retried request) cannot start it twice.
    assert (await user.post(f"/api/tasks/{task['id']}/resume")).status_code == 409
    await asyncio.sleep(1)
    assert target.hits(key) == 1


async def test_resumed_after_the_catch_up_window_it_is_missed(
    user: ApiUser,
    target: HttpTarget,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    key = uuid.uuid4().hex
    tasks = []
    for name in ("paused", "lost"):
        body = one_time(f"{target.url}/ok/{key}-{name}", in_seconds=2, name=name)
        body["schedule"]["catchup_window_seconds"] = 10
        tasks.append(await user.create_task(body))
    paused, lost = tasks
    assert (await user.post(f"/api/tasks/{paused['id']}/pause")).status_code == 200
    # A schedule lost in Temporal (deleted by hand, a restored backup...) before it fired.
    await temporal.get_schedule_handle(f"task-{lost['id']}").delete()
    await _until_past(paused, 12)

    resumed = await user.post(f"/api/tasks/{paused['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "failed" and resumed.json()["next_run_at"] is None
    report = await reconcile(sessions, temporal, settings.task_queue)
    assert f"task-{lost['id']}" in report.settled
    for task in (paused, lost):
        [run] = await user.executions(task["id"])
        assert run["status"] == "failed" and run["trigger"] == "schedule"
        assert run["error"]["type"] == "Missed", run
        assert "catch-up window" in run["error"]["message"]
        refreshed = (await user.get(f"/api/tasks/{task['id']}")).json()
        assert refreshed["status"] == "failed" and refreshed["failure_count"] == 1
        assert refreshed["temporal"]["schedule_id"] is None
    assert target.hits(f"{key}-paused") == target.hits(f"{key}-lost") == 0

    # A new run_at brings it back.
    later = datetime.fromisoformat(paused["schedule"]["run_at"]) + timedelta(days=1)
    again = await user.request(
        "PATCH", f"/api/tasks/{paused['id']}", json={"schedule": {"run_at": later.isoformat()}}
    )
    assert again.status_code == 200 and again.json()["status"] == "active"


async def test_a_finished_task_stays_editable(user: ApiUser, target: HttpTarget) -> None:
    task = await user.create_task(one_time(f"{target.url}/ok/{uuid.uuid4().hex}", in_seconds=1))
    await eventually(lambda: _status(user, task["id"], "completed"))
    edited = await user.request(
        "PATCH", f"/api/tasks/{task['id']}", json={"description": "ran fine", "tags": ["done"]}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["status"] == "completed"
    assert edited.json()["description"] == "ran fine" and edited.json()["tags"] == ["done"]
    assert edited.json()["temporal"]["schedule_id"] is None
    past = await user.request(
        "PATCH",
        f"/api/tasks/{task['id']}",
        json={"schedule": {"run_at": "2020-01-01T00:00:00Z"}},
    )
    assert past.status_code == 422


async def test_resumed_while_its_run_is_in_flight_it_runs_once(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = one_time(f"{target.url}/slow/{key}?seconds=4", in_seconds=1)
    body["schedule"]["catchup_window_seconds"] = 600
    task = await user.create_task(body)
    await target.wait_for_hits(key, 1)  # the schedule fired; the run is still going
    assert (await user.post(f"/api/tasks/{task['id']}/pause")).status_code == 200
    resumed = await user.post(f"/api/tasks/{task['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    done = await eventually(lambda: _status(user, task["id"], "completed", "failed"))
    assert done["status"] == "completed" and done["run_count"] == 1
    await asyncio.sleep(2)
    assert target.hits(key) == 1, "resuming started the run a second time"
    assert len(await user.executions(task["id"])) == 1
