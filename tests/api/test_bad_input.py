"""Ordinary mistakes and hostile input are located 422s (or succeed), never a 500 or 503,
on both databases: cursors, cron strings Temporal would refuse, dates at the edges of what
anything can represent, NUL characters, and racing writes of a new secret."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema.orm import Task
from tests.conftest import ApiUser, Installation
from tests.fixtures.tasks import one_time, recurring

URL = "http://127.0.0.1:9/"


def _cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _request(
    installation: Installation, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    return await installation.api.request(method, path, headers=installation.headers, **kwargs)


def _assert_located(response: httpx.Response, loc: list[Any]) -> str:
    """The message of the error at ``loc`` of a 422 problem."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    messages = {tuple(e["loc"]): e["msg"] for e in response.json()["errors"]}
    assert tuple(loc) in messages, response.text
    message: str = messages[tuple(loc)]
    return message


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(b"[" * 1000),  # RecursionError in the JSON decoder
        _cursor(["2026-01-01T00:00:00", str(uuid.uuid4())]),  # naive timestamp
        _cursor({"at": "2026-01-01T00:00:00Z"}),
        _cursor([1, 2]),
        "x" * 5000,
    ],
    ids=["deep", "naive", "object", "numbers", "long"],
)
async def test_a_bad_cursor_is_a_located_422(installation: Installation, cursor: str) -> None:
    task = (await _request(installation, "POST", "/api/tasks", json=recurring(URL))).json()
    for path in ("/api/tasks", f"/api/tasks/{task['id']}/executions"):
        response = await _request(installation, "GET", path, params={"cursor": cursor})
        _assert_located(response, ["query", "cursor"])


async def test_pages_follow_each_other_on_both_databases(installation: Installation) -> None:
    created = set()
    for index in range(5):
        body = recurring(URL, name=f"page {index}")
        created.add((await _request(installation, "POST", "/api/tasks", json=body)).json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await _request(installation, "GET", "/api/tasks", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert created <= set(seen)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    "cron",
    [
        "@DAILY",
        "? * * * *",
        "0 0 ? * MON",
        "0 0 * * ?",
        "\u0661 * * * *",
        "0 0 * * 1#2",
        "*/4294967296 * * * *",  # Temporal keeps steps in 32 bits: this one would wrap to 0
    ],
)
async def test_crons_temporal_refuses_are_located_422s(user: ApiUser, cron: str) -> None:
    response = await user.post("/api/tasks", json=recurring(URL, cron=cron))
    _assert_located(response, ["body", "schedule", "cron"])
    report = (await user.post("/api/tasks/validate", json=recurring(URL, cron=cron))).json()
    assert report["valid"] is False
    assert ["body", "schedule", "cron"] in [error["loc"] for error in report["errors"]]


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("@daily", "At 12:00 AM"),
        ("@hourly", "Every hour"),
        ("@yearly", "January"),
        ("0 9 * * mon-fri", "Monday through Friday"),
        ("0 0 1 January *", "January"),
    ],
)
async def test_shorthands_and_names_validate_and_are_described(
    user: ApiUser, cron: str, words: str
) -> None:
    response = await user.post("/api/tasks/validate", json=recurring(URL, cron=cron))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is True, report
    assert words in report["description"]
    assert report["next_runs"] and len(report["next_runs"]) == len(report["next_runs_local"])
    created = await user.post("/api/tasks", json=recurring(URL, cron=cron))
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("schedule", "loc"),
    [
        ({"run_at": "2101-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": "9999-12-31T23:59:59-23:59"}, "run_at"),
        ({"run_at": "0001-01-01T00:00:00+05:00"}, "run_at"),
    ],
)
async def test_one_time_dates_out_of_range_are_located_422s(
    user: ApiUser, schedule: dict[str, str], loc: str
) -> None:
    body = {**one_time(URL), "schedule": schedule}
    _assert_located(await user.post("/api/tasks", json=body), ["body", "schedule", loc])
    report = (await user.post("/api/tasks/validate", json=body)).json()
    assert report["valid"] is False and ["body", "schedule", loc] in [
        error["loc"] for error in report["errors"]
    ]


@pytest.mark.parametrize(
    ("schedule", "loc"),
    [
        ({"start_at": "9999-12-31T23:59:00-23:00"}, "start_at"),
        ({"end_at": "0001-01-01T00:00:00+05:00"}, "end_at"),
        ({"end_at": "2100-12-31T23:59:59-05:00"}, "end_at"),
    ],
)
async def test_recurring_dates_out_of_range_are_located_422s(
    user: ApiUser, schedule: dict[str, str], loc: str
) -> None:
    body = recurring(URL, cron="0 9 * * *", schedule=schedule)
    _assert_located(await user.post("/api/tasks", json=body), ["body", "schedule", loc])


@pytest.mark.parametrize(
    "start", ["9999-12-30T00:00:00Z", "0001-01-01T00:00:00Z", "2100-12-31T00:00:00Z"]
)
async def test_upcoming_at_the_edges_of_time(user: ApiUser, start: str) -> None:
    response = await user.get("/api/tasks/upcoming", params={"from": start})
    if start.startswith("2100"):
        assert response.status_code == 200, response.text  # the window ends with 2100
    else:
        _assert_located(response, ["query", "from"])


async def test_nul_characters_are_refused_on_both_databases(installation: Installation) -> None:
    bad_bodies = [
        (recurring(URL, name="a\x00b"), ["body", "name"]),
        (recurring(URL, config={"headers": {"X-A\x00": "1"}}), None),
        (recurring(URL, config={"body": {"k\x00ey": 1}}), None),
        (recurring(URL, config={"body": {"key": "v\x00"}}), None),
    ]
    for body, loc in bad_bodies:
        response = await _request(installation, "POST", "/api/tasks", json=body)
        assert response.status_code == 422, response.text
        assert "NUL" in response.text
        if loc:
            assert loc in [error["loc"] for error in response.json()["errors"]]
    task = (await _request(installation, "POST", "/api/tasks", json=recurring(URL))).json()
    patched = await _request(
        installation, "PATCH", f"/api/tasks/{task['id']}", json={"description": "x\x00"}
    )
    assert patched.status_code == 422, patched.text
    for name in ("q", "tag"):
        response = await _request(installation, "GET", "/api/tasks", params={name: "a\x00b"})
        _assert_located(response, ["query", name])
    response = await _request(
        installation, "GET", f"/api/tasks/{task['id']}/executions", params={"workflow_id": "\x00"}
    )
    _assert_located(response, ["query", "workflow_id"])


async def test_a_task_saved_before_todays_checks_still_reads(
    user: ApiUser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    task = await user.create_task(recurring(URL, cron="0 9 * * *"))
    legacy = {
        "cron": "0 9 * * *",
        "timezone": "posixrules",
        "start_at": "2026-01-01T01:00:00+01:00",
    }
    async with sessions.begin() as session:  # as an earlier version accepted and saved it
        await session.execute(
            update(Task).where(Task.id == uuid.UUID(task["id"])).values(schedule=legacy)
        )
    response = await user.get(f"/api/tasks/{task['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["schedule"]["timezone"] == "posixrules"
    listed = await user.get("/api/tasks")
    assert listed.status_code == 200, listed.text


async def test_racing_writes_of_a_new_secret_all_succeed(installation: Installation) -> None:
    name = f"RACE_{uuid.uuid4().hex[:8]}"

    async def put(index: int) -> httpx.Response:
        return await _request(
            installation, "PUT", f"/api/secrets/{name}", json={"value": f"value {index}"}
        )

    responses = await asyncio.gather(*(put(index) for index in range(20)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 201}, [r.text for r in responses if r.status_code >= 300]
    assert statuses.count(201) == 1
    listed = (await _request(installation, "GET", "/api/secrets")).json()["items"]
    assert [item["name"] for item in listed].count(name) == 1


@pytest.mark.parametrize(
    ("cron", "schedule", "warning"),
    [
        ("0 0 31 2 *", {}, "February never has day 31"),
        ("0 0 30 2 *", {}, "February never has day 30"),
        ("0 9 * * *", {"end_at": "2020-01-01T00:00:00Z"}, "a schedule that ended never fires"),
    ],
)
async def test_a_schedule_that_never_fires_is_refused_and_validate_says_why(
    user: ApiUser, cron: str, schedule: dict[str, str], warning: str
) -> None:
    body = recurring(URL, cron=cron, schedule=schedule)
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    assert warning in response.text
    report = (await user.post("/api/tasks/validate", json=body)).json()
    assert report["valid"] is False
    assert any(warning in text for text in report["warnings"]), report


async def test_a_schedule_beyond_the_preview_window_is_valid_with_a_warning(
    user: ApiUser,
) -> None:
    body = recurring(URL, cron="0 0 29 2 *")  # 29 February: the next leap year may be far
    report = (await user.post("/api/tasks/validate", json=body)).json()
    assert report["valid"] is True
    far = recurring(URL, cron="0 9 * * *", schedule={"start_at": "2099-01-01T00:00:00Z"})
    report = (await user.post("/api/tasks/validate", json=far)).json()
    assert report["valid"] is True and report["next_runs"] == []
    assert any("does not fire within the next 400 days" in w for w in report["warnings"])


async def test_steps_are_described_as_temporal_fires_them(user: ApiUser) -> None:
    report = (
        await user.post("/api/tasks/validate", json=recurring(URL, cron="*/100 * * * *"))
    ).json()
    assert report["valid"] is True
    assert "100" not in report["description"]
    assert report["description"].startswith("Every hour")
    assert any("matches minute 0 only" in warning for warning in report["warnings"])
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in zip(
            map(_instant, report["next_runs"]), map(_instant, report["next_runs"][1:]), strict=False
        )
    ]
    assert set(gaps) == {3600}
    uneven = (
        await user.post("/api/tasks/validate", json=recurring(URL, cron="*/7 * * * *"))
    ).json()
    assert any("that gap is 4, not 7" in warning for warning in uneven["warnings"])


@pytest.mark.parametrize(
    "zone",
    ["localtime", "Factory", "posixrules", "right/UTC", "posix/Europe/Berlin", "/etc/localtime"],
)
async def test_only_iana_zone_names_are_accepted(user: ApiUser, zone: str) -> None:
    body = recurring(URL, cron="0 9 * * *", timezone=zone)
    _assert_located(await user.post("/api/tasks", json=body), ["body", "schedule", "timezone"])


@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC", "Etc/UTC", "US/Eastern"])
async def test_iana_zone_names_and_links_are_accepted(user: ApiUser, zone: str) -> None:
    body = recurring(URL, cron="0 9 * * *", timezone=zone)
    assert (await user.post("/api/tasks", json=body)).status_code == 201


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_run_at_without_offset_is_read_in_the_task_zone(user: ApiUser) -> None:
    local = (datetime.now(ZoneInfo("Asia/Tokyo")) + timedelta(days=2)).replace(
        microsecond=0, tzinfo=None
    )
    body = {**one_time(URL), "schedule": {"run_at": local.isoformat(), "timezone": "Asia/Tokyo"}}
    report = (await user.post("/api/tasks/validate", json=body)).json()
    expected = local.replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert report["valid"] is True, report
    assert _instant(report["next_runs"][0]) == expected
    assert _instant(report["next_runs_local"][0]).utcoffset() == timedelta(hours=9)
    created = await user.create_task(body)
    assert _instant(created["schedule"]["run_at"]) == expected
    read = (await user.get(f"/api/tasks/{created['id']}")).json()
    # One form of the timestamp, from create and from GET alike: UTC.
    assert read["schedule"]["run_at"] == created["schedule"]["run_at"]
    assert created["schedule"]["run_at"].endswith("Z")
    with_offset = {**body, "schedule": {"run_at": expected.isoformat(), "timezone": "Asia/Tokyo"}}
    again = await user.create_task(with_offset)
    assert again["schedule"]["run_at"] == created["schedule"]["run_at"]


async def test_upcoming_carries_each_run_in_its_task_zone(user: ApiUser) -> None:
    await user.create_task(recurring(URL, cron="0 9 * * *", timezone="America/New_York"))
    items = (await user.get("/api/tasks/upcoming")).json()["items"]
    assert items
    for item in items:
        local = _instant(item["local_at"])
        assert item["timezone"] == "America/New_York"
        assert local == _instant(item["at"])
        assert (local.hour, local.minute) == (9, 0)
