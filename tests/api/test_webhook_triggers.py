"""Webhook-trigger tasks end to end: signed deliveries in the three modes, refusals, repeats,
pause, delete, and the runs they become."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
from temporalio.client import Client

from api.main import create_app
from api.signatures import sign
from schema.settings import Settings
from tests.conftest import ApiUser, connect_when_up, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import webhook_action
from tests.fixtures.tcp_proxy import TcpProxy


def trigger_task(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": fields.pop("name", "webhook trigger"),
        "type": "trigger",
        "trigger": fields.pop("trigger", {"kind": "webhook"}),
        "action": fields.pop("action", webhook_action(url)),
        **fields,
    }


async def _hook(user: ApiUser, task_id: str, auth: str = "hmac") -> dict[str, Any]:
    response = await user.post(f"/api/tasks/{task_id}/webhook", json={"auth": auth})
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    return hook


def _signed(secret: str, body: bytes, at: int | None = None) -> dict[str, str]:
    return {
        "X-Cronpilot-Signature": sign(secret, body, int(time.time()) if at is None else at),
        "Content-Type": "application/json",
    }


def _path(hook: dict[str, Any]) -> str:
    return "/api/webhooks/" + str(hook["url"]).rsplit("/", 1)[1]


async def test_a_signed_delivery_runs_the_task_with_its_payload(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    action = webhook_action(f"{target.url}/echo/{key}", body={"got": "{{ payload.n }}"})
    task = await user.create_task(trigger_task("", action=action))
    assert task["type"] == "trigger" and task["next_run_at"] is None
    hook = await _hook(user, task["id"])
    assert hook["auth"] == "hmac" and len(hook["secret"]) >= 32
    assert hook["url"].endswith(f"/api/webhooks/{hook['webhook_id']}")
    body = json.dumps({"n": 41}).encode()
    response = await user.client.post(
        _path(hook), content=body, headers=_signed(hook["secret"], body)
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["delivery_id"].startswith("sha256:")
    assert accepted["workflow_id"].startswith(f"task-{task['id']}-webhook-")
    await target.wait_for_hits(key, 1)
    assert json.loads(target.requests[key][0]["body"]) == {"got": "41"}

    async def recorded() -> list[dict[str, Any]] | None:
        runs = await user.executions(task["id"], status="succeeded")
        return runs or None

    [run] = await eventually(recorded)
    assert run["trigger"] == "webhook"
    assert run["workflow_id"] == accepted["workflow_id"]

    async def counted() -> dict[str, Any] | None:
        listed = (await user.get(f"/api/tasks/{task['id']}/webhooks")).json()["items"]
        return listed[0] if listed[0]["use_count"] == 1 else None

    listed = await eventually(counted, timeout=15)
    assert listed["last_used_at"] is not None and "secret" not in listed


async def test_forged_expired_and_missing_signatures_start_nothing(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"])
    body = b'{"n": 1}'
    cases = {
        "forged": _signed("not-the-secret", body),
        "expired": _signed(hook["secret"], body, at=int(time.time()) - 301),
        # Well ahead: the clock moves on while the requests before it are answered.
        "future": _signed(hook["secret"], body, at=int(time.time()) + 360),
        "missing": {"Content-Type": "application/json"},
        "malformed": {"X-Cronpilot-Signature": "v1=abc"},
    }
    for name, headers in cases.items():
        response = await user.client.post(_path(hook), content=body, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A valid signature over another body is a forgery too.
    headers = _signed(hook["secret"], b'{"n": 2}')
    assert (await user.client.post(_path(hook), content=body, headers=headers)).status_code == 401
    # A replay of a valid request within the window is the same delivery: it runs once.
    headers = _signed(hook["secret"], body)
    first = await user.client.post(_path(hook), content=body, headers=headers)
    again = await user.client.post(_path(hook), content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    await target.wait_for_hits(key, 1)
    runs = await user.ended(task["id"], 1)
    assert len(runs) == 1 and target.hits(key) == 1


async def test_github_and_token_modes(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    github = await _hook(user, task["id"], "github")
    token = await _hook(user, task["id"], "token")
    body = b'{"n": 7}'
    digest = hmac.new(github["secret"].encode(), body, hashlib.sha256).hexdigest()
    good = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "gh-1"}
    bad = {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "gh-2"}
    assert (await user.client.post(_path(github), content=body, headers=bad)).status_code == 401
    accepted = await user.client.post(_path(github), content=body, headers=good)
    assert accepted.status_code == 202 and accepted.json()["delivery_id"] == "gh-1"
    assert (
        await user.client.post(_path(token), content=body, headers={"X-Cronpilot-Token": "x"})
    ).status_code == 401
    headers = {"X-Cronpilot-Token": token["secret"], "X-Cronpilot-Delivery": "tok-1"}
    accepted = await user.client.post(_path(token), content=body, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["delivery_id"] == "tok-1"
    await target.wait_for_hits(key, 2)
    # The two webhooks are the task's own: the list shows both, no secrets.
    listed = (await user.get(f"/api/tasks/{task['id']}/webhooks")).json()["items"]
    assert {item["auth"] for item in listed} == {"github", "token"}
    assert all("secret" not in item for item in listed)


async def test_a_repeated_delivery_id_runs_once(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "token")
    answers = []
    for n in range(3):
        headers = {"X-Cronpilot-Token": hook["secret"], "X-Cronpilot-Delivery": "order-17"}
        response = await user.client.post(_path(hook), json={"n": n}, headers=headers)
        assert response.status_code == 202, response.text
        answers.append(response.json())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["delivery_id"] == "order-17"
    await target.wait_for_hits(key, 1)
    await user.ended(task["id"], 1)
    fresh = {"X-Cronpilot-Token": hook["secret"], "X-Cronpilot-Delivery": "order-18"}
    assert (await user.client.post(_path(hook), json={}, headers=fresh)).status_code == 202
    await target.wait_for_hits(key, 2)
    runs = await user.ended(task["id"], 2)
    assert len(runs) == 2 and target.hits(key) == 2


async def test_paused_is_409_and_resume_accepts_again(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "token")
    headers = {"X-Cronpilot-Token": hook["secret"]}
    assert (await user.post(f"/api/tasks/{task['id']}/pause")).json()["status"] == "paused"
    refused = await user.client.post(_path(hook), json={}, headers=headers)
    assert refused.status_code == 409, refused.text
    assert "paused" in refused.json()["detail"]
    assert (await user.post(f"/api/tasks/{task['id']}/resume")).json()["status"] == "active"
    assert (await user.client.post(_path(hook), json={}, headers=headers)).status_code == 202
    await target.wait_for_hits(key, 1)
    assert target.hits(key) == 1


async def test_delete_stops_the_trigger_and_revokes_its_webhooks(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "token")
    other = await _hook(user, task["id"], "token")
    revoked = await user.request("DELETE", f"/api/webhooks/{other['webhook_id']}")
    assert revoked.status_code == 204
    headers = {"X-Cronpilot-Token": other["secret"]}
    assert (await user.client.post(_path(other), json={}, headers=headers)).status_code == 404
    assert (await user.request("DELETE", f"/api/webhooks/{other['webhook_id']}")).status_code == 404
    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    headers = {"X-Cronpilot-Token": hook["secret"]}
    assert (await user.client.post(_path(hook), json={}, headers=headers)).status_code == 404
    assert target.hits(key) == 0


async def test_webhooks_belong_to_webhook_trigger_tasks_of_their_user(
    user: ApiUser, make_user: Any, target: HttpTarget
) -> None:
    stranger: ApiUser = await make_user()
    task = await user.create_task(trigger_task(f"{target.url}/ok/x"))
    assert (await stranger.post(f"/api/tasks/{task['id']}/webhook", json={})).status_code == 404
    assert (await stranger.get(f"/api/tasks/{task['id']}/webhooks")).status_code == 404
    hook = await _hook(user, task["id"])
    assert (
        await stranger.request("DELETE", f"/api/webhooks/{hook['webhook_id']}")
    ).status_code == 404
    event_task = await user.create_task(
        trigger_task(f"{target.url}/ok/x", trigger={"kind": "event", "event": "a.b"})
    )
    refused = await user.post(f"/api/tasks/{event_task['id']}/webhook", json={})
    assert refused.status_code == 409


async def test_200_concurrent_deliveries_run_once_each_within_the_concurrency(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    """Each of 200 deliveries sent at once runs exactly once, never more than `concurrency`
    at a time; the trigger workflow continues as new on the way (the session's server
    suggests it every few hundred events) and loses nothing."""
    key = uuid.uuid4().hex
    action = webhook_action(f"{target.url}/slow/{key}?seconds=0.2", body={"n": "{{ payload.n }}"})
    task = await user.create_task(trigger_task("", action=action, concurrency=5))
    hook = await _hook(user, task["id"], "token")

    async def send(n: int) -> httpx.Response:
        headers = {"X-Cronpilot-Token": hook["secret"], "X-Cronpilot-Delivery": f"d-{n}"}
        return await user.client.post(_path(hook), json={"n": n}, headers=headers)

    answers = await asyncio.gather(*(send(n) for n in range(200)))
    assert [answer.status_code for answer in answers] == [202] * 200
    # A second wave of the same ids: accepted again, run never.
    again = await asyncio.gather(*(send(n) for n in range(0, 200, 10)))
    assert {answer.status_code for answer in again} == {202}
    await target.wait_for_hits(key, 200, timeout=300)
    seen = sorted(int(json.loads(hit["body"])["n"]) for hit in target.requests[key])
    assert seen == list(range(200))
    assert 1 < target.most_in_flight[key] <= 5

    async def all_recorded() -> int | None:
        count, cursor = 0, None
        while True:
            params: dict[str, Any] = {"limit": 200, "status": "succeeded"}
            if cursor:
                params["cursor"] = cursor
            page = (await user.get(f"/api/tasks/{task['id']}/executions", params=params)).json()
            count += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return count if count == 200 else None

    assert await eventually(all_recorded, timeout=120) == 200
    assert target.hits(key) == 200
    # The trigger workflow rolled over at least once, and still runs.
    handle = temporal.get_workflow_handle(f"trigger-{task['id']}")
    description = await handle.describe()
    assert description.status is not None and description.status.name == "RUNNING"
    assert description.run_id != description.raw_description.workflow_execution_info.first_run_id
    state = await handle.query("state")
    assert state["queued"] == 0 and state["running"] == 0 and state["seen"] == 200


async def test_temporal_unreachable_is_503_never_202(
    user: ApiUser, target: HttpTarget, settings: Settings, temporal_address: str
) -> None:
    """A receiver whose Temporal is cut off answers 503 to deliveries and events: nothing
    is accepted that Temporal did not take."""
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "token")
    name = f"cut.{key[:8]}"
    await user.create_task(
        trigger_task(f"{target.url}/ok/{key}", trigger={"kind": "event", "event": name})
    )
    host, port = temporal_address.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    cut_off = settings.model_copy(update={"temporal_address": f"127.0.0.1:{proxy.port}"})
    client = await connect_when_up(cut_off.temporal_address)
    app = create_app(cut_off, temporal=client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cut") as http:
            headers = {"X-Cronpilot-Token": hook["secret"]}
            assert (await http.post(_path(hook), json={}, headers=headers)).status_code == 202
            await proxy.cut()
            refused = await http.post(_path(hook), json={}, headers=headers)
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            event = await http.post(
                "/api/events", json={"name": name, "payload": {}}, headers=user.headers
            )
            assert event.status_code == 503, event.text
    await target.wait_for_hits(key, 1)
    await asyncio.sleep(2)
    assert target.hits(key) == 1


async def test_rate_limit_and_body_limit(
    user: ApiUser, target: HttpTarget, settings: Settings, temporal: Client
) -> None:
    """Over the per-webhook rate: 429 with Retry-After, nothing started; over the body
    limit: 413. The limits are settings."""
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "token")
    limited = settings.model_copy(
        update={"webhook_rate_limit_per_minute": 2, "webhook_max_body_bytes": 2048}
    )
    app = create_app(limited, temporal=temporal)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://limited") as http:
            headers = {"X-Cronpilot-Token": hook["secret"]}
            too_big = await http.post(_path(hook), content=b"x" * 2049, headers=headers)
            assert too_big.status_code == 413, too_big.text
            answers = [
                await http.post(
                    _path(hook), json={}, headers={**headers, "X-Cronpilot-Delivery": f"r{n}"}
                )
                for n in range(3)
            ]
            assert [answer.status_code for answer in answers] == [202, 202, 429]
            assert int(answers[2].headers["Retry-After"]) >= 1
            assert answers[2].headers["content-type"] == "application/problem+json"
    await target.wait_for_hits(key, 2)
    await asyncio.sleep(1)
    assert target.hits(key) == 2
