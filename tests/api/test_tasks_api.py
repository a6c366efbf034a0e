"""Task CRUD, validation, lists, statistics, upcoming runs and the error format."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.conftest import ApiUser
from tests.fixtures.tasks import one_time, recurring

URL = "http://127.0.0.1:9/"


def _schedule_ids_of(temporal: Client) -> Any:
    async def _ids() -> set[str]:
        return {s.id async for s in await temporal.list_schedules()}

    return _ids


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"schedule": {"cron": "61 * * * *"}}, ["body", "schedule", "cron"]),
        ({"schedule": {"cron": "* * *"}}, ["body", "schedule", "cron"]),
        (
            {"schedule": {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}},
            ["body", "schedule", "timezone"],
        ),
        ({"schedule": {"cron": "0 9 * * *", "interval_seconds": 60}}, ["body", "schedule"]),
        ({"schedule": {}}, ["body", "schedule"]),
        (
            {"type": "one_time", "schedule": {"run_at": "2020-01-01T00:00:00+00:00"}},
            ["body", "schedule", "run_at"],
        ),
        (
            # Without an offset run_at is read in the task's zone; 2101 is past Temporal's end.
            {"type": "one_time", "schedule": {"run_at": "2101-01-01T00:00:00"}},
            ["body", "schedule", "run_at"],
        ),
        ({"action": {"type": "teleport", "config": {}}}, ["body", "action"]),
        (
            {"action": {"type": "webhook", "config": {"url": "ftp://x"}}},
            ["body", "action", "webhook", "config", "url"],
        ),
        (
            {"action": {"type": "webhook", "config": {"url": URL, "verb": "GET"}}},
            ["body", "action", "webhook", "config", "verb"],
        ),
        ({"colour": "blue"}, ["body", "colour"]),
        ({"name": ""}, ["body", "name"]),
        ({"retry": {"max_attempts": 0}}, ["body", "retry", "max_attempts"]),
        (
            {"schedule": {"interval_seconds": 60, "catchup_window_seconds": 5}},
            ["body", "schedule", "catchup_window_seconds"],
        ),
        ({"type": "trigger", "schedule": None}, ["body", "trigger"]),
        ({"type": "trigger", "trigger": {"kind": "webhook"}}, ["body", "schedule"]),
        ({"trigger": {"kind": "webhook"}}, ["body", "trigger"]),
        (
            {"type": "trigger", "schedule": None, "trigger": {"kind": "event", "event": "a b"}},
            ["body", "trigger", "event", "event"],
        ),
        (
            {"type": "trigger", "schedule": None, "trigger": {"kind": "telepathy"}},
            ["body", "trigger"],
        ),
        ({"notify": {"webhook_url": "ftp://x"}}, ["body", "notify", "webhook_url"]),
    ],
)
async def test_invalid_tasks_are_422_and_create_nothing(
    user: ApiUser, temporal: Client, change: dict[str, Any], loc: list[Any]
) -> None:
    body = {**recurring(URL, interval_seconds=60), **change}
    if "schedule" in change and change["schedule"] is not None:
        body["schedule"] = change["schedule"]
    before = await _schedule_ids_of(temporal)()
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "Invalid input"
    assert loc in [error["loc"] for error in problem["errors"]], problem["errors"]
    assert all(error["msg"] for error in problem["errors"])
    assert "Traceback" not in response.text
    assert (await user.get("/api/tasks")).json()["items"] == []
    # Nothing new (other tests' one-time schedules may finish and vanish meanwhile).
    assert await _schedule_ids_of(temporal)() - before == set()

    validated = await user.post("/api/tasks/validate", json=body)
    assert validated.status_code == 200
    report = validated.json()
    assert report["valid"] is False and loc in [e["loc"] for e in report["errors"]]


async def test_malformed_json_and_bad_ids(user: ApiUser) -> None:
    response = await user.post(
        "/api/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await user.get("/api/tasks/not-a-uuid")).status_code == 404  # no such task
    assert (await user.get(f"/api/tasks/{uuid.uuid4()}")).status_code == 404
    assert (await user.get("/api/tasks", params={"cursor": "garbage"})).status_code == 422
    assert (await user.get("/api/tasks", params={"limit": 500})).status_code == 422


async def test_large_bodies_are_413(user: ApiUser) -> None:
    body = recurring(URL, description="x" * 2_000_000)
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 413
    assert response.json()["title"] == "Request body too large"

    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    streamed = await user.post(
        "/api/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert (await user.get("/api/tasks")).json()["items"] == []


async def test_create_read_and_defaults(user: ApiUser) -> None:
    created = await user.create_task(
        recurring(URL, cron="0 9 * * 1-5", timezone="Europe/Berlin", tags=["b", "a", "a"])
    )
    assert created["status"] == "active"
    assert created["retry"] == {
        "max_attempts": 3,
        "initial_interval_seconds": 1.0,
        "backoff_coefficient": 2.0,
        "max_interval_seconds": 300.0,
        "jitter": True,
        "non_retryable_errors": [],
    }
    assert created["timeout_seconds"] == 300 and created["tags"] == ["a", "b"]
    assert created["schedule"]["overlap"] == "skip"
    assert created["run_count"] == 0 and created["last_run_at"] is None
    next_run = datetime.fromisoformat(created["next_run_at"])
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert created["temporal"]["ui_url"].endswith(f"/schedules/task-{created['id']}")
    read = (await user.get(f"/api/tasks/{created['id']}")).json()
    assert read == created


async def test_list_filters_and_keyset_pagination(user: ApiUser) -> None:
    ids = []
    for n in range(5):
        task = await user.create_task(
            recurring(
                URL,
                interval_seconds=3600,
                name=f"report {n}",
                description="weekly digest" if n % 2 else "",
                tags=["even"] if n % 2 == 0 else [],
            )
        )
        ids.append(task["id"])
    await user.post(f"/api/tasks/{ids[0]}/pause")

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await user.get("/api/tasks", params=params)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A task created between pages does not shift or repeat the rest.
        await user.create_task(recurring(URL, interval_seconds=3600, name="late arrival"))
    assert seen == list(reversed(ids))

    async def names(**params: Any) -> list[str]:
        return [t["name"] for t in (await user.get("/api/tasks", params=params)).json()["items"]]

    assert await names(status="paused") == ["report 0"]
    assert await names(tag="even") == ["report 4", "report 2", "report 0"]
    assert await names(q="DIGEST") == ["report 3", "report 1"]
    assert await names(q="report 1") == ["report 1"]
    assert await names(type="one_time") == []
    assert (await user.get("/api/tasks", params={"status": "bogus"})).status_code == 422


async def test_patch_is_a_merge_patch_validated_as_a_whole(user: ApiUser) -> None:
    task = await user.create_task(recurring(URL, interval_seconds=3600))
    changed = await user.request(
        "PATCH",
        f"/api/tasks/{task['id']}",
        json={"retry": {"max_attempts": 7}, "action": {"config": {"method": "GET"}}},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["retry"]["max_attempts"] == 7 and body["retry"]["backoff_coefficient"] == 2.0
    assert body["action"]["config"] == {**task["action"]["config"], "method": "GET"}

    bad = await user.request(
        "PATCH", f"/api/tasks/{task['id']}", json={"schedule": {"cron": "0 9 * * *"}}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "schedule"]
    unknown = await user.request("PATCH", f"/api/tasks/{task['id']}", json={"colour": "red"})
    assert unknown.status_code == 422
    assert (await user.get(f"/api/tasks/{task['id']}")).json()["retry"]["max_attempts"] == 7


async def test_validate_reports_runs_words_and_dst(user: ApiUser) -> None:
    body = recurring(URL, cron="30 2 * * *", timezone="Europe/Berlin")
    report = (await user.post("/api/tasks/validate", json=body)).json()
    assert report["valid"] is True and report["errors"] == []
    assert len(report["next_runs"]) == 5
    runs = [datetime.fromisoformat(r) for r in report["next_runs"]]
    assert runs == sorted(runs) and all(r > datetime.now(UTC) for r in runs)
    assert "02:30" in report["description"] and "Europe/Berlin" in report["description"]
    spring = [w for w in report["warnings"] if "skips" in w]
    assert len(spring) == 1, report["warnings"]
    next_spring = _last_sunday(datetime.now(UTC).year + (datetime.now(UTC).month > 3), 3)
    assert spring[0].startswith(next_spring.isoformat())
    assert (await user.get("/api/tasks")).json()["items"] == []

    fall = recurring(URL, cron="30 1 * * *", timezone="Europe/Berlin")
    fall_report = (await user.post("/api/tasks/validate", json=fall)).json()
    doubled = [w for w in fall_report["warnings"] if "doubles" in w]
    next_fall = _last_sunday(datetime.now(UTC).year + (datetime.now(UTC).month > 10), 10)
    assert len(doubled) == 1 and doubled[0].startswith(next_fall.isoformat()), fall_report

    utc = (await user.post("/api/tasks/validate", json=recurring(URL, cron="30 2 * * *"))).json()
    assert utc["warnings"] == []
    every = (
        await user.post("/api/tasks/validate", json=recurring(URL, interval_seconds=90))
    ).json()
    assert every["description"] == "Every 90 seconds"
    gaps = {
        (datetime.fromisoformat(b) - datetime.fromisoformat(a))
        for a, b in zip(every["next_runs"], every["next_runs"][1:], strict=False)
    }
    assert gaps == {timedelta(seconds=90)}


def _last_sunday(year: int, month: int) -> Any:
    day = datetime(year, month + 1, 1) - timedelta(days=1)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day.date()


async def test_upcoming_merges_the_users_active_tasks(user: ApiUser) -> None:
    hourly = await user.create_task(recurring(URL, cron="0 * * * *", name="hourly"))
    daily = await user.create_task(recurring(URL, cron="0 12 * * *", name="noon"))
    paused = await user.create_task(recurring(URL, cron="*/5 * * * *", name="paused"))
    await user.post(f"/api/tasks/{paused['id']}/pause")
    once = await user.create_task(one_time(URL, in_seconds=3 * 3600, name="once"))
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    response = await user.get(
        "/api/tasks/upcoming",
        params={"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    at = [datetime.fromisoformat(i["at"]) for i in items]
    assert at == sorted(at)
    by_task: dict[str, int] = {}
    for item in items:
        by_task[item["task_id"]] = by_task.get(item["task_id"], 0) + 1
    assert by_task[hourly["id"]] == 24 and by_task[daily["id"]] == 1
    assert by_task[once["id"]] == 1 and paused["id"] not in by_task
    limited = await user.get("/api/tasks/upcoming", params={"limit": 3})
    assert len(limited.json()["items"]) == 3
    empty = await user.get(
        "/api/tasks/upcoming", params={"from": start.isoformat(), "to": start.isoformat()}
    )
    assert empty.status_code == 200 and empty.json()["items"] == []
    earlier = (start - timedelta(hours=1)).isoformat()
    backwards = await user.get(
        "/api/tasks/upcoming", params={"from": start.isoformat(), "to": earlier}
    )
    assert backwards.status_code == 422


async def test_health_readiness_metrics_and_docs(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    assert "cronpilot_http_requests_total" in (await app_client.get("/metrics")).text
    assert (await app_client.get("/docs")).status_code == 200
    spec = (await app_client.get("/openapi.json")).json()
    assert "/api/tasks/{task_id}/executions" in spec["paths"]
