"""Schedules on the real Temporal dev server: every kind fires, pause, resume, run now,
update in place, delete, and reconcile."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from api import scheduling
from api.reconcile import reconcile
from schema.settings import Settings
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import one_time, recurring


async def _schedule_exists(temporal: Client, task_id: str) -> bool:
    try:
        await temporal.get_schedule_handle(f"task-{task_id}").describe()
    except RPCError as error:
        assert error.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def test_every_schedule_kind_fires_and_records_history(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    once = await user.create_task(one_time(f"{target.url}/ok/{key}-once", in_seconds=2))
    interval = await user.create_task(recurring(f"{target.url}/ok/{key}-interval"))
    cron = await user.create_task(
        recurring(f"{target.url}/ok/{key}-cron", cron="* * * * *", timezone="Europe/Berlin")
    )
    assert once["next_run_at"] is not None and interval["next_run_at"] is not None
    assert cron["temporal"]["schedule_id"] == f"task-{cron['id']}"

    async def finished(task_id: str, at_least: int = 1) -> list[dict[str, object]]:
        runs = await user.executions(task_id, status="succeeded")
        return runs if len(runs) >= at_least else []

    once_runs, interval_runs, cron_runs = await asyncio.gather(
        eventually(lambda: finished(once["id"]), timeout=30),
        eventually(lambda: finished(interval["id"], 2), timeout=30),
        eventually(lambda: finished(cron["id"]), timeout=75),
    )
    for run in [*once_runs, *interval_runs, *cron_runs]:
        assert run["trigger"] == "schedule"
        assert run["attempts"] == 1
        assert run["scheduled_at"] is not None
        assert run["result"]["status_code"] == 200  # type: ignore[index]
        assert run["temporal"]["ui_url"].endswith(f"/{run['run_id']}/history")  # type: ignore[index]
    assert str(cron_runs[0]["scheduled_at"]).endswith(":00Z")
    assert target.hits(f"{key}-once") == 1

    # A one-time task completes and its schedule is removed.
    task = (await user.get(f"/api/tasks/{once['id']}")).json()
    assert task["status"] == "completed"
    assert task["run_count"] == 1 and task["last_status"] == "succeeded"
    assert task["temporal"]["schedule_id"] is None
    assert not await _schedule_exists(temporal, once["id"])
    stats = (await user.get(f"/api/tasks/{interval['id']}/stats")).json()
    assert stats["succeeded"] >= 2 and stats["success_rate"] == 1.0


async def test_one_time_failure_marks_task_failed(user: ApiUser, target: HttpTarget) -> None:
    task = await user.create_task(
        one_time(f"{target.url}/seq/{uuid.uuid4().hex}?codes=404", in_seconds=1)
    )

    async def status() -> str | None:
        value = (await user.get(f"/api/tasks/{task['id']}")).json()["status"]
        return value if value in ("completed", "failed") else None

    assert await eventually(status) == "failed"
    runs = await user.executions(task["id"])
    assert [r["status"] for r in runs] == ["failed"]


async def test_pause_stops_firing_and_resume_restarts(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(recurring(f"{target.url}/ok/{key}", interval_seconds=1))
    await eventually(lambda: user.executions(task["id"], status="succeeded"))

    paused = await user.post(f"/api/tasks/{task['id']}/pause")
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused" and paused.json()["next_run_at"] is None
    description = await temporal.get_schedule_handle(f"task-{task['id']}").describe()
    assert description.schedule.state.paused
    assert "paused by" in (description.schedule.state.note or "")

    # The scheduler's own count of started runs, not the target's hits: a run started just
    # before the pause may reach the target late on a busy machine.
    handle = temporal.get_schedule_handle(f"task-{task['id']}")
    actions = (await handle.describe()).info.num_actions
    await asyncio.sleep(3.5)
    assert (await handle.describe()).info.num_actions == actions, "a paused task fired"

    resumed = await user.post(f"/api/tasks/{task['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"

    async def fired_again() -> bool:
        return (await handle.describe()).info.num_actions > actions

    await eventually(fired_again, timeout=15)
    hits = target.hits(key)
    await eventually(lambda: asyncio.sleep(0, target.hits(key) > hits), timeout=15)


async def test_run_now_while_paused_is_recorded_as_manual(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(recurring(f"{target.url}/ok/{key}", interval_seconds=3600))
    assert (await user.post(f"/api/tasks/{task['id']}/pause")).status_code == 200

    started = await user.post(f"/api/tasks/{task['id']}/run")
    assert started.status_code == 202
    body = started.json()
    assert body["workflow_id"].startswith(f"task-{task['id']}-manual-") and body["run_id"]

    runs = await eventually(lambda: user.executions(task["id"], status="succeeded"))
    assert runs[0]["trigger"] == "manual"
    assert runs[0]["workflow_id"] == body["workflow_id"] and runs[0]["run_id"] == body["run_id"]
    assert target.hits(key) == 1
    task_now = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert task_now["status"] == "paused" and task_now["run_count"] == 1


async def test_update_changes_the_schedule_in_place(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    task = await user.create_task(recurring(f"{target.url}/ok/x", interval_seconds=3600))
    handle = temporal.get_schedule_handle(f"task-{task['id']}")
    before = await handle.describe()

    patched = await user.request(
        "PATCH",
        f"/api/tasks/{task['id']}",
        json={
            "schedule": {
                "cron": "15 9 * * 1-5",
                "interval_seconds": None,
                "timezone": "America/New_York",
            },
            "name": "renamed",
        },
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed"
    after = await handle.describe()
    assert after.info.created_at == before.info.created_at, "the schedule was recreated"
    assert after.schedule.spec.time_zone_name == "America/New_York"
    assert after.schedule.spec.intervals == []
    calendar = after.schedule.spec.calendars[0]
    assert [r.start for r in calendar.hour] == [9] and [r.start for r in calendar.minute] == [15]
    assert patched.json()["next_run_at"] == after.info.next_action_times[0].isoformat().replace(
        "+00:00", "Z"
    )

    body = recurring(f"{target.url}/ok/y", interval_seconds=7200, name="replaced")
    replaced = await user.request("PUT", f"/api/tasks/{task['id']}", json=body)
    assert replaced.status_code == 200, replaced.text
    latest = await handle.describe()
    assert latest.info.created_at == before.info.created_at
    assert latest.schedule.spec.intervals[0].every == timedelta(hours=2)
    action = latest.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert replaced.json()["action"]["config"]["url"].endswith("/ok/y")


async def test_delete_removes_the_schedule(user: ApiUser, temporal: Client) -> None:
    task = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    assert await _schedule_exists(temporal, task["id"])
    deleted = await user.request("DELETE", f"/api/tasks/{task['id']}")
    assert deleted.status_code == 204
    assert not await _schedule_exists(temporal, task["id"])
    assert (await user.get(f"/api/tasks/{task['id']}")).status_code == 404


async def test_pause_of_a_completed_task_is_a_conflict(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(one_time(f"{target.url}/ok/{key}", in_seconds=1))
    # Events, not a deadline: the run reaches the target, then its workflow ends, and the
    # workflow ends only after its final record (which completes the task) is written.
    await target.wait_for_hits(key, 1)
    await (await _scheduled_run(temporal, task["id"])).result()
    assert (await user.get(f"/api/tasks/{task['id']}")).json()["status"] == "completed"
    response = await user.post(f"/api/tasks/{task['id']}/pause")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


async def _scheduled_run(temporal: Client, task_id: str) -> WorkflowHandle[Any, Any]:
    """The run the task's schedule started most recently (its schedule may be gone by now,
    so it is found by its search attribute)."""
    query = f"CronpilotTaskId = '{task_id}'"

    async def listed() -> str | None:
        async for execution in temporal.list_workflows(query):
            return execution.id
        return None

    return temporal.get_workflow_handle(await eventually(listed))


async def test_reconcile_recreates_missing_and_removes_orphans(
    user: ApiUser,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    task = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    paused = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    assert (await user.post(f"/api/tasks/{paused['id']}/pause")).status_code == 200
    await temporal.get_schedule_handle(f"task-{task['id']}").delete()
    await temporal.get_schedule_handle(f"task-{paused['id']}").unpause(note="drift")
    orphan_id = f"task-{uuid.uuid4()}"
    await temporal.create_schedule(
        orphan_id,
        Schedule(
            action=ScheduleActionStartWorkflow("TaskWorkflow", id=orphan_id, task_queue="none"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )

    async def listed() -> bool:  # the schedule list is eventually consistent
        return orphan_id in (await scheduling.schedule_ids(temporal)).values()

    async def drifted() -> bool:  # the scheduler takes the unpause in its own time
        described = await temporal.get_schedule_handle(f"task-{paused['id']}").describe()
        return not described.schedule.state.paused

    await eventually(listed)
    await eventually(drifted)
    report = await reconcile(sessions, temporal, settings.task_queue, orphan_grace=timedelta(0))
    assert f"task-{task['id']}" in report.created
    assert f"task-{paused['id']}" in report.updated
    assert orphan_id in report.deleted
    assert await _schedule_exists(temporal, task["id"])
    assert not await _schedule_exists(temporal, orphan_id.removeprefix("task-"))
    description = await temporal.get_schedule_handle(f"task-{paused['id']}").describe()
    assert description.schedule.state.paused

    again = await reconcile(sessions, temporal, settings.task_queue, orphan_grace=timedelta(0))
    assert (again.created, again.updated, again.deleted) == ([], [], [])


@pytest.mark.parametrize("operation", ["pause", "resume", "delete"])
async def test_bulk_operations_report_each_id(
    user: ApiUser, make_user: object, operation: str
) -> None:
    other = await make_user()  # type: ignore[operator]
    mine = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    theirs = await other.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    if operation == "resume":
        await user.post(f"/api/tasks/{mine['id']}/pause")
    missing = str(uuid.uuid4())
    response = await user.post(
        f"/api/tasks/bulk-{operation}", json={"ids": [mine["id"], theirs["id"], missing]}
    )
    assert response.status_code == 200, response.text
    results = {r["id"]: r for r in response.json()["results"]}
    assert results[mine["id"]]["ok"] is True
    assert results[theirs["id"]] == {"id": theirs["id"], "ok": False, "error": "task not found"}
    assert results[missing]["ok"] is False
    after = await user.get(f"/api/tasks/{mine['id']}")
    expected = {"pause": "paused", "resume": "active"}
    if operation == "delete":
        assert after.status_code == 404
    else:
        assert after.json()["status"] == expected[operation]
    assert (await other.get(f"/api/tasks/{theirs['id']}")).json()["status"] == "active"


@pytest.mark.parametrize("verb", ["pause", "resume"])
async def test_pause_or_resume_recreates_a_missing_schedule(
    user: ApiUser, temporal: Client, verb: str
) -> None:
    task = await user.create_task(recurring("http://127.0.0.1:9/", interval_seconds=3600))
    if verb == "resume":
        assert (await user.post(f"/api/tasks/{task['id']}/pause")).status_code == 200
    await temporal.get_schedule_handle(f"task-{task['id']}").delete()
    response = await user.post(f"/api/tasks/{task['id']}/{verb}")
    assert response.status_code == 200, response.text
    description = await temporal.get_schedule_handle(f"task-{task['id']}").describe()
    assert description.schedule.state.paused is (verb == "pause")
    assert f"{verb}d by" in (description.schedule.state.note or "")
