"""One task's changes go one at a time, on both databases: under concurrent PATCH, PUT,
pause, resume and DELETE requests, and reconciles running beside them, every task's row and
its Temporal schedule end up equal, field by field, and every answer is a 2xx or a 404."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow

from api.reconcile import reconcile
from api.scheduling import OVERLAP, describe, memo_of
from schema import crud
from schema.orm import Task
from schema.tasks import TaskRunInput
from tests.conftest import Installation
from tests.fixtures.tasks import one_time, recurring

MUTATIONS_PER_TASK = 50
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
CRONS = ("0 9 * * 1-5", "*/15 * * * *", "30 2 * * *", "0 0 1 * *")
OVERLAPS = tuple(OVERLAP)


def _schedule(rng: random.Random, task_type: str) -> dict[str, Any]:
    window = rng.randint(10, 3600)
    if task_type == "one_time":
        at = datetime.now(UTC) + timedelta(days=rng.randint(1, 300), seconds=rng.randint(0, 999))
        return {"run_at": at.isoformat(), "catchup_window_seconds": window}
    schedule: dict[str, Any] = {
        "timezone": rng.choice(ZONES),
        "overlap": rng.choice(OVERLAPS),
        "catchup_window_seconds": window,
    }
    if rng.random() < 0.5:
        schedule["cron"] = rng.choice(CRONS)
    else:
        schedule["interval_seconds"] = rng.randint(600, 90_000)
    return schedule


def _mutation(rng: random.Random, task: dict[str, Any]) -> tuple[str, str, Any]:
    """A random change a user could send: (method, path, body)."""
    path = f"/api/tasks/{task['id']}"
    kind = rng.choices(["patch", "put", "pause", "resume", "delete"], weights=[4, 2, 3, 3, 1])[0]
    if kind in ("pause", "resume"):
        return "POST", f"{path}/{kind}", None
    if kind == "delete":
        return "DELETE", path, None
    schedule = _schedule(rng, task["type"])
    name = f"renamed {rng.randint(0, 10**6)}"
    if kind == "put":
        body = {key: task[key] for key in ("type", "action", "retry", "tags")}
        return "PUT", path, {**body, "name": name, "schedule": schedule}
    if task["type"] != "one_time":  # a merge patch: null removes the other kind
        schedule.setdefault("cron", None)
        schedule.setdefault("interval_seconds", None)
    return "PATCH", path, {"name": name, "schedule": schedule}


async def mismatches(temporal: Client, task: Task | None, task_id: uuid.UUID) -> list[str]:
    """Every way the task's schedule differs from its row (empty when they agree)."""
    description = await describe(temporal, task_id)
    if task is None or not crud.owns_schedule(task):
        return [] if description is None else ["a schedule exists without a live task"]
    if description is None:
        return ["the task has no schedule"]
    spec = crud.task_spec(task)
    schedule = spec.schedule
    assert schedule is not None
    found = []
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    carried = temporal.data_converter.payload_converter.from_payload(action.args[0], TaskRunInput)
    if carried.task != spec:
        found.append(f"the schedule runs another spec: {carried.task} != {spec}")
    if memo_of(temporal, description).get("spec_hash") != spec.spec_hash():
        found.append("spec hash")
    if description.schedule.state.paused != (task.status == "paused"):
        found.append(f"paused={description.schedule.state.paused}, status={task.status}")
    policy = description.schedule.policy
    if policy.overlap != OVERLAP[schedule.overlap]:
        found.append(f"overlap {policy.overlap} != {schedule.overlap}")
    if policy.catchup_window != timedelta(seconds=schedule.catchup_window_seconds):
        found.append(f"catch-up window {policy.catchup_window}")
    zone = "UTC" if spec.type == "one_time" else schedule.timezone
    if description.schedule.spec.time_zone_name != zone:
        found.append(f"time zone {description.schedule.spec.time_zone_name} != {zone}")
    intervals = description.schedule.spec.intervals
    expected = [timedelta(seconds=schedule.interval_seconds)] if schedule.interval_seconds else []
    if [interval.every for interval in intervals] != expected:
        found.append(f"intervals {intervals} != {expected}")
    return found


async def _create(install: Installation, body: dict[str, Any]) -> dict[str, Any]:
    response = await install.api.post("/api/tasks", json=body, headers=install.headers)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def _tasks(install: Installation, ids: list[str]) -> dict[uuid.UUID, Task | None]:
    async with install.sessions() as session:
        return {uuid.UUID(i): await session.get(Task, uuid.UUID(i)) for i in ids}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_changes_leave_row_and_schedule_equal(
    installation: Installation, seed: int
) -> None:
    install, rng = installation, random.Random(seed)
    url = "http://127.0.0.1:9/"
    tasks = [
        await _create(install, recurring(url, cron="0 9 * * 1-5", name="cron")),
        await _create(install, recurring(url, interval_seconds=3600, name="interval")),
        await _create(install, one_time(url, in_seconds=86400, name="once")),
    ]
    requests = [(task["id"], *_mutation(rng, task)) for task in tasks]
    requests += [(t["id"], *_mutation(rng, t)) for t in tasks for _ in range(MUTATIONS_PER_TASK)]
    rng.shuffle(requests)

    async def send(method: str, path: str, body: Any) -> httpx.Response:
        return await install.api.request(method, path, json=body, headers=install.headers)

    responses = await asyncio.gather(*(send(m, p, b) for _, m, p, b in requests))
    by_task: dict[str, list[tuple[str, int]]] = {}
    for (task_id, method, _, _), response in zip(requests, responses, strict=True):
        assert response.status_code in (200, 204, 404), (method, response.text)
        by_task.setdefault(task_id, []).append((method, response.status_code))
    for answers in by_task.values():
        deletes = [status for method, status in answers if method == "DELETE"]
        assert deletes.count(204) == (1 if deletes else 0), answers
    rows = await _tasks(install, [t["id"] for t in tasks])
    for task_id, row in rows.items():
        assert await mismatches(install.temporal, row, task_id) == [], f"seed {seed}, {task_id}"
        if row is not None:
            get = await install.api.get(f"/api/tasks/{task_id}", headers=install.headers)
            assert get.json()["status"] == row.status
    for task_id in rows:
        await install.api.delete(f"/api/tasks/{task_id}", headers=install.headers)


async def test_reconcile_never_undoes_a_change(installation: Installation) -> None:
    install = installation
    url = "http://127.0.0.1:9/"
    rng = random.Random(7)

    async def create_and_flip(n: int) -> str:
        task = await _create(install, recurring(url, interval_seconds=3600, name=f"r{n}"))
        for _ in range(rng.randint(1, 4)):
            verb = rng.choice(["pause", "resume"])
            response = await install.api.post(
                f"/api/tasks/{task['id']}/{verb}", headers=install.headers
            )
            assert response.status_code == 200, response.text
        return str(task["id"])

    async def reconcile_now() -> None:
        await reconcile(install.sessions, install.temporal, install.settings.task_queue)

    results = await asyncio.gather(
        *(create_and_flip(n) for n in range(12)), *(reconcile_now() for _ in range(4))
    )
    ids = [r for r in results if isinstance(r, str)]
    await reconcile_now()  # and once more, after everything settled
    rows = await _tasks(install, ids)
    for task_id, row in rows.items():
        assert row is not None
        assert await mismatches(install.temporal, row, task_id) == []
        await install.api.delete(f"/api/tasks/{task_id}", headers=install.headers)
