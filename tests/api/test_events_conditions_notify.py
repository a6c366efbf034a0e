"""Events between tasks and users, the event loop limit, conditions that skip runs, and
notifications by email and HTTP: through the REST API, the real worker and real peers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from schema.triggers import MAX_EVENT_DEPTH
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.smtp_server import SmtpServer
from tests.fixtures.tasks import recurring, webhook_action


def event_task(event: str, action: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "name": fields.pop("name", f"on {event}"),
        "type": "trigger",
        "trigger": {"kind": "event", "event": event},
        "action": action,
        **fields,
    }


async def test_an_event_starts_the_users_matching_tasks_only(
    user: ApiUser, make_user: Callable[[], Awaitable[ApiUser]], target: HttpTarget
) -> None:
    stranger = await make_user()
    key, other_key, stranger_key = (uuid.uuid4().hex for _ in range(3))
    name = f"order.created.{key[:6]}"
    body = {"order": "{{ payload.order }}"}
    mine = await user.create_task(
        event_task(name, webhook_action(f"{target.url}/echo/{key}", body=body))
    )
    await user.create_task(
        event_task("other.event", webhook_action(f"{target.url}/ok/{other_key}"))
    )
    await stranger.create_task(event_task(name, webhook_action(f"{target.url}/ok/{stranger_key}")))
    response = await user.post("/api/events", json={"name": name, "payload": {"order": 17}})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["matched"] == 1 and len(accepted["workflow_ids"]) == 1
    await target.wait_for_hits(key, 1)
    assert json.loads(target.requests[key][0]["body"]) == {"order": "17"}
    [run] = await user.ended(mine["id"], 1)
    assert run["trigger"] == "event" and run["status"] == "succeeded"
    assert run["workflow_id"] == accepted["workflow_ids"][0]
    # The same event id again starts nothing new; an unknown name matches nothing.
    again = await user.post(
        "/api/events", json={"name": name, "payload": {}, "id": accepted["event_id"]}
    )
    assert again.status_code == 202 and again.json()["workflow_ids"] == accepted["workflow_ids"]
    nothing = await user.post("/api/events", json={"name": "nobody.listens", "payload": None})
    assert nothing.json()["matched"] == 0
    assert target.hits(other_key) == 0 and target.hits(stranger_key) == 0
    assert target.hits(key) == 1
    bad = await user.post("/api/events", json={"name": "has space", "payload": None})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "name"]


async def test_a_runs_built_in_event_starts_another_task(user: ApiUser, target: HttpTarget) -> None:
    key, follow = uuid.uuid4().hex, uuid.uuid4().hex
    first = await user.create_task(
        recurring(f"{target.url}/ok/{key}", interval_seconds=86400, name="first")
    )
    body = {"after": "{{ payload.task_name }}", "status": "{{ payload.status }}"}
    await user.create_task(
        event_task("task.succeeded", webhook_action(f"{target.url}/echo/{follow}", body=body))
    )
    done = await user.run_to_end(first["id"])
    assert done["status"] == "succeeded"
    await target.wait_for_hits(follow, 1)
    assert json.loads(target.requests[follow][0]["body"]) == {
        "after": "first",
        "status": "succeeded",
    }


async def test_a_loop_of_events_is_cut_at_the_depth_limit(
    user: ApiUser, target: HttpTarget
) -> None:
    """Two tasks started by each other's success would run forever; the chain stops at the
    limit, and the run that would have gone deeper says so in its log. (A task is never
    started by its own run's event.)"""
    key = uuid.uuid4().hex
    ping = await user.create_task(
        event_task("task.succeeded", webhook_action(f"{target.url}/ok/{key}"), name="ping")
    )
    pong = await user.create_task(
        event_task("task.succeeded", webhook_action(f"{target.url}/ok/{key}"), name="pong")
    )
    # Run now starts the loop 0 hops deep; each event goes one hop further.
    assert (await user.post(f"/api/tasks/{ping['id']}/run")).status_code == 202
    total = MAX_EVENT_DEPTH + 1
    await target.wait_for_hits(key, total)
    pings = await user.ended(ping["id"], (total + 1) // 2)
    pongs = await user.ended(pong["id"], total // 2)
    assert sorted(run["trigger"] for run in pings) == ["event"] * (total // 2) + ["manual"]
    assert {run["trigger"] for run in pongs} == {"event"}

    async def refused() -> dict[str, Any] | None:
        for task in (ping, pong):
            items = (await user.get(f"/api/tasks/{task['id']}/executions")).json()["items"]
            for item in items:
                full: dict[str, Any] = (await user.get(f"/api/executions/{item['id']}")).json()
                if any("over the limit" in line["message"] for line in full["logs"]):
                    return full
        return None

    deepest = await eventually(refused, timeout=30)
    assert f"{MAX_EVENT_DEPTH + 1} events deep, over the limit of {MAX_EVENT_DEPTH}" in (
        json.dumps(deepest["logs"])
    )
    await asyncio.sleep(2)  # nothing more follows
    assert target.hits(key) == total
    assert len(await user.ended(ping["id"], 1)) + len(await user.ended(pong["id"], 1)) == total


async def test_a_false_condition_skips_the_run_with_its_reason(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    condition = {
        "all": [
            {"path": "payload.amount", "op": "gt", "value": 100},
            {
                "path": "now.weekday",
                "op": "in",
                "value": [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ],
            },
        ]
    }
    name = f"paid.{key[:8]}"
    task = await user.create_task(
        event_task(name, webhook_action(f"{target.url}/ok/{key}"), condition=condition)
    )
    assert task["condition"] == condition
    await user.post("/api/events", json={"name": name, "payload": {"amount": 50}})
    [skipped] = await user.ended(task["id"], 1)
    assert skipped["status"] == "skipped"
    full = (await user.get(f"/api/executions/{skipped['id']}")).json()
    assert full["error"] == {
        "type": "ConditionNotMet",
        "message": "not all of 2 held: payload.amount is 50, not gt 100",
    }
    assert any(line["message"].startswith("skipped: ") for line in full["logs"])
    assert target.hits(key) == 0
    await user.post("/api/events", json={"name": name, "payload": {"amount": 150}})
    runs = await user.ended(task["id"], 2)
    assert sorted(run["status"] for run in runs) == ["skipped", "succeeded"]
    assert target.hits(key) == 1
    stats = (await user.get(f"/api/tasks/{task['id']}/stats")).json()
    assert stats["skipped"] == 1 and stats["succeeded"] == 1


async def test_a_condition_on_the_last_run(user: ApiUser, target: HttpTarget) -> None:
    """`last` is the previous execution: this task runs only after one that failed."""
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/ok/{key}",
        interval_seconds=86400,
        condition={"not": {"path": "last.status", "op": "eq", "value": "succeeded"}},
    )
    task = await user.create_task(body)
    first = await user.run_to_end(task["id"])
    assert first["status"] == "succeeded"  # no previous run: `last.status` is missing
    second = await user.run_to_end(task["id"])
    assert second["status"] == "skipped"
    assert 'last.status is "succeeded"' in second["error"]["message"]


async def test_invalid_conditions_are_located_422s(user: ApiUser, target: HttpTarget) -> None:
    cases = [
        ({"path": "payload.x", "op": "between", "value": 1}, ["body", "condition", "op"]),
        ({"path": "weather.today", "op": "eq", "value": 1}, ["body", "condition", "path"]),
        (
            {"all": [{"path": "payload.x", "op": "in", "value": 3}]},
            ["body", "condition", "all", 0, "value"],
        ),
        ({"path": "steps.a.output", "op": "exists"}, ["body", "condition", "path"]),
    ]
    for condition, loc in cases:
        body = recurring(f"{target.url}/ok/x", interval_seconds=3600, condition=condition)
        response = await user.post("/api/tasks", json=body)
        assert response.status_code == 422, (condition, response.text)
        assert loc in [error["loc"] for error in response.json()["errors"]], response.text
        report = (await user.post("/api/tasks/validate", json=body)).json()
        assert report["valid"] is False
        assert loc in [error["loc"] for error in report["errors"]], report


async def test_notifications_by_email_and_http_after_the_run(
    user: ApiUser, target: HttpTarget, smtp_peer: SmtpServer
) -> None:
    key, hook = uuid.uuid4().hex, uuid.uuid4().hex
    address = f"ops-{key[:8]}@example.com"
    body = recurring(
        f"{target.url}/seq/{key}?codes=404",
        interval_seconds=86400,
        name=f"notified {key[:8]}",
        notify={"on": ["failure"], "email": [address], "webhook_url": f"{target.url}/echo/{hook}"},
    )
    task = await user.create_task(body)
    failed = await user.run_to_end(task["id"])
    assert failed["status"] == "failed"
    await target.wait_for_hits(hook, 1)
    summary = json.loads(target.requests[hook][0]["body"])
    assert summary["task_id"] == task["id"] and summary["status"] == "failed"
    assert summary["execution_id"] == failed["id"]
    assert summary["error"]["type"] == "HttpStatusError"

    def mailed() -> list[Any]:
        return [m for m in smtp_peer.received if address in m.rcpt_tos]

    await eventually(lambda: _some(mailed()))
    [mail] = mailed()
    assert mail.message["Subject"] == f"[Cronpilot] notified {key[:8]}: failed"
    assert "HttpStatusError" in mail.message.get_content()

    async def logged() -> dict[str, Any] | None:
        full = (await user.get(f"/api/executions/{failed['id']}")).json()
        return full if any("notified by" in line["message"] for line in full["logs"]) else None

    assert (await eventually(logged))["status"] == "failed"


async def _some(items: list[Any]) -> list[Any] | None:
    return items or None


async def test_a_failing_notification_is_logged_and_changes_nothing(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/ok/{key}",
        interval_seconds=86400,
        notify={"on": ["always"], "webhook_url": f"{target.url}/seq/{key}-hook?codes=500"},
    )
    task = await user.create_task(body)
    done = await user.run_to_end(task["id"])
    assert done["status"] == "succeeded"

    async def logged() -> dict[str, Any] | None:
        full = (await user.get(f"/api/executions/{done['id']}")).json()
        lines = [line for line in full["logs"] if "notification failed" in line["message"]]
        return full if lines else None

    full = await eventually(logged)
    assert full["status"] == "succeeded"
    assert any("answered 500" in line["message"] for line in full["logs"])


async def test_a_matches_condition_runs_in_the_workflow(user: ApiUser, target: HttpTarget) -> None:
    """`matches` is evaluated by RE2 inside the workflow sandbox, even for a pattern that
    would make Python's `re` backtrack for days on this payload."""
    key = uuid.uuid4().hex
    name = f"text.{key[:8]}"
    condition = {"path": "payload.text", "op": "matches", "value": "(a+)+$"}
    task = await user.create_task(
        event_task(name, webhook_action(f"{target.url}/ok/{key}"), condition=condition)
    )
    await user.post("/api/events", json={"name": name, "payload": {"text": "a" * 40 + "b"}})
    await user.post("/api/events", json={"name": name, "payload": {"text": "b" + "a" * 40}})
    runs = await user.ended(task["id"], 2)
    assert sorted(run["status"] for run in runs) == ["skipped", "succeeded"]
    assert target.hits(key) == 1
