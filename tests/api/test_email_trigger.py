"""Email-trigger tasks end to end: the task's schedule polls a real IMAP server on loopback
(tests/fixtures/imap_server.py), each new matching message runs the task once with the
message as its payload, and is marked seen."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    WorkflowFailureError,
)
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.worker import Replayer

from api import scheduling
from schema.temporal_ids import trigger_workflow_id
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.imap_server import ImapServer, Security
from tests.fixtures.tasks import webhook_action
from worker import WORKFLOWS

SECRET = "IMAP_PASSWORD"
PAYLOAD_BODY = {
    "subject": "{{ payload.subject }}",
    "from": "{{ payload['from'] }}",
    "message_id": "{{ payload.message_id }}",
    "text": "{{ payload.text }}",
    "trigger": "{{ run.trigger }}",
}


def email(subject: str, message_id: str, sender: str = "Alice <alice@example.com>") -> bytes:
    lines = [
        f"From: {sender}",
        "To: bot@example.com",
        f"Subject: {subject}",
        "Date: Tue, 01 Apr 2025 09:30:00 +0200",
        f"Message-ID: <{message_id}>",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"About {subject}.",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def email_task(
    imap: ImapServer,
    mailbox: str,
    action: dict[str, Any],
    security: Security = "none",
    **trigger: Any,
) -> dict[str, Any]:
    return {
        "name": "email trigger",
        "type": "trigger",
        "trigger": {
            "kind": "email",
            "imap_host": imap.host,
            "imap_port": imap.ports[security],
            "imap_security": security,
            "username": mailbox,
            "password_secret": SECRET,
            "poll_seconds": 10,
            **trigger,
        },
        "action": action,
    }


@pytest.fixture
def mailbox(imap_server: ImapServer) -> str:
    """A mailbox of this test's own (its password is the server's to tell)."""
    name = f"box-{uuid.uuid4().hex[:8]}"
    imap_server.add_user(name, f"pw-{uuid.uuid4().hex}")
    return name


@pytest.fixture
async def create(
    user: ApiUser,
) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
    """Create tasks that are deleted after the test: none keeps polling for later tests."""
    created: list[str] = []

    async def _create(body: dict[str, Any]) -> dict[str, Any]:
        task = await user.create_task(body)
        created.append(task["id"])
        return task

    yield _create
    for task_id in created:
        await user.request("DELETE", f"/api/tasks/{task_id}")


async def put_secret(user: ApiUser, value: str) -> None:
    response = await user.request("PUT", f"/api/secrets/{SECRET}", json={"value": value})
    assert response.status_code in (200, 201), response.text


async def poll(temporal: Client, task_id: str) -> dict[str, Any]:
    """Poll now (the schedule triggered, as from the Web UI) and return what the first poll
    that started after this call returned; raises WorkflowFailureError for a failed one.
    A poll already running makes the trigger a skip: the next scheduled one is then it."""
    handle = temporal.get_schedule_handle(f"task-{task_id}")
    since = datetime.now(UTC)
    await handle.trigger()

    async def started() -> ScheduleActionResult | None:
        actions = (await handle.describe()).info.recent_actions
        return next((a for a in actions if a.started_at >= since), None)

    action = (await eventually(started, timeout=30)).action
    assert isinstance(action, ScheduleActionExecutionStartWorkflow)
    assert action.workflow_id.startswith(f"task-{task_id}-poll-")
    run = temporal.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id)
    result: dict[str, Any] = await run.result()
    return result


async def failed_poll(temporal: Client, task_id: str) -> ApplicationError:
    """The activity failure of the next poll, which must fail without a retry."""
    with pytest.raises(WorkflowFailureError) as failure:
        await poll(temporal, task_id)
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def ended_runs(user: ApiUser, task_id: str, count: int) -> list[dict[str, Any]] | None:
    runs = [run for run in await user.executions(task_id) if run["status"] != "running"]
    return runs if len(runs) >= count else None


async def test_a_matching_message_runs_the_task_once_and_is_marked_seen(
    user: ApiUser,
    target: HttpTarget,
    temporal: Client,
    imap_server: ImapServer,
    mailbox: str,
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> None:
    key = uuid.uuid4().hex
    await put_secret(user, imap_server.mailbox_settings("none", username=mailbox)["password"])
    action = webhook_action(f"{target.url}/echo/{key}", body=PAYLOAD_BODY)
    task = await create(email_task(imap_server, mailbox, action, subject_contains="invoice"))
    assert task["next_run_at"] is None
    assert task["temporal"]["schedule_id"] == f"task-{task['id']}"
    invoice = imap_server.append(
        email("Invoice 42", f"invoice-42-{key}@example.com"), username=mailbox
    )
    lunch = imap_server.append(email("Lunch?", f"lunch-{key}@example.com"), username=mailbox)

    await poll(temporal, task["id"])

    await target.wait_for_hits(key, 1)
    assert json.loads(target.requests[key][0]["body"]) == {
        "subject": "Invoice 42",
        "from": "Alice <alice@example.com>",
        "message_id": f"invoice-42-{key}@example.com",
        "text": "About Invoice 42.",
        "trigger": "email",
    }
    [run] = await eventually(lambda: ended_runs(user, task["id"], 1))
    assert run["trigger"] == "email" and run["status"] == "succeeded"
    assert imap_server.flags(username=mailbox) == {invoice: {"\\Seen"}, lunch: set()}

    # Later polls find nothing new; the same message arriving again unseen (as after a poll
    # that died between its delivery and marking it seen) is delivered, and dropped by the
    # task's trigger workflow as a repeat of its Message-ID.
    assert (await poll(temporal, task["id"]))["delivered"] == 0
    again = imap_server.append(
        email("Invoice 42", f"invoice-42-{key}@example.com"), username=mailbox
    )
    assert await poll(temporal, task["id"]) == {
        "delivered": 1,
        "message_ids": [f"invoice-42-{key}@example.com"],
        "task_gone": False,
    }
    assert imap_server.flags(username=mailbox)[again] == {"\\Seen"}
    state = await temporal.get_workflow_handle(trigger_workflow_id(task["id"])).query("state")
    assert state["seen"] == 1 and state["queued"] == state["running"] == 0
    assert len(await user.executions(task["id"])) == 1 and target.hits(key) == 1


async def test_ssl_with_the_operators_ca_file(
    user: ApiUser,
    target: HttpTarget,
    temporal: Client,
    imap_server: ImapServer,
    mailbox: str,
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> None:
    """The worker trusts the server's self-signed certificate through IMAP_CA_FILE."""
    key = uuid.uuid4().hex
    await put_secret(user, imap_server.mailbox_settings("ssl", username=mailbox)["password"])
    action = webhook_action(f"{target.url}/echo/{key}", body=PAYLOAD_BODY)
    task = await create(email_task(imap_server, mailbox, action, "ssl"))
    uid = imap_server.append(email("Over TLS", f"tls-{key}@example.com"), username=mailbox)

    await poll(temporal, task["id"])

    [run] = await eventually(lambda: ended_runs(user, task["id"], 1))
    assert run["status"] == "succeeded"
    assert json.loads(target.requests[key][0]["body"])["subject"] == "Over TLS"
    assert imap_server.flags(username=mailbox) == {uid: {"\\Seen"}}
    logins = [login for login in imap_server.logins if login.username == mailbox]
    assert logins and all(login.tls and login.ok for login in logins)


async def test_a_missing_secret_or_wrong_password_fails_the_poll_until_fixed(
    user: ApiUser,
    target: HttpTarget,
    temporal: Client,
    imap_server: ImapServer,
    mailbox: str,
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> None:
    """A failed poll is not retried, records no run and leaves the message unseen; the next
    poll after the secret is right delivers it."""
    key = uuid.uuid4().hex
    task = await create(email_task(imap_server, mailbox, webhook_action(f"{target.url}/ok/{key}")))
    uid = imap_server.append(email("Report", f"report-{key}@example.com"), username=mailbox)

    missing = await failed_poll(temporal, task["id"])
    assert missing.type == "MissingSecret" and SECRET in missing.message

    await put_secret(user, "not-the-password")
    refused = await failed_poll(temporal, task["id"])
    assert refused.type == "ImapAuthError"
    assert "not-the-password" not in refused.message
    assert imap_server.flags(username=mailbox) == {uid: set()}
    assert await user.executions(task["id"]) == [] and target.hits(key) == 0

    await put_secret(user, imap_server.mailbox_settings("none", username=mailbox)["password"])
    assert (await poll(temporal, task["id"]))["delivered"] == 1
    [run] = await eventually(lambda: ended_runs(user, task["id"], 1))
    assert run["status"] == "succeeded" and target.hits(key) == 1
    assert imap_server.flags(username=mailbox) == {uid: {"\\Seen"}}


async def test_the_poll_schedule_follows_the_task(
    user: ApiUser,
    temporal: Client,
    imap_server: ImapServer,
    mailbox: str,
    target: HttpTarget,
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> None:
    """Validated without next runs, left out of upcoming, paused and resumed with the task
    (with the memo reconcile checks), gone with it."""
    body = email_task(imap_server, mailbox, webhook_action(f"{target.url}/ok/x"))
    report = (await user.post("/api/tasks/validate", json=body)).json()
    assert report["valid"] is True and report["next_runs"] == []
    assert report["description"] == "Polls 127.0.0.1 every 10 s"
    webhook = {**body, "trigger": {"kind": "webhook"}}
    report = (await user.post("/api/tasks/validate", json=webhook)).json()
    assert report["valid"] is True and report["description"] == "Runs on each webhook delivery"

    task = await create(body)
    upcoming = (await user.get("/api/tasks/upcoming")).json()["items"]
    assert task["id"] not in {item["task_id"] for item in upcoming}
    description = await scheduling.describe(temporal, uuid.UUID(task["id"]))
    assert description is not None and not description.schedule.state.paused
    memo = scheduling.memo_of(temporal, description)
    assert memo["task_id"] == task["id"] and memo["run_at"] is None
    first, second, *_ = description.info.next_action_times
    assert (second - first).total_seconds() == 10

    assert (await user.post(f"/api/tasks/{task['id']}/pause")).status_code == 200
    description = await scheduling.describe(temporal, uuid.UUID(task["id"]))
    assert description is not None and description.schedule.state.paused
    assert (await user.post(f"/api/tasks/{task['id']}/resume")).status_code == 200
    patched = await user.request(
        "PATCH",
        f"/api/tasks/{task['id']}",
        json={"trigger": {**body["trigger"], "poll_seconds": 60}},
    )
    assert patched.status_code == 200, patched.text
    description = await scheduling.describe(temporal, uuid.UUID(task["id"]))
    assert description is not None and not description.schedule.state.paused
    assert [i.every.total_seconds() for i in description.schedule.spec.intervals] == [60]
    assert scheduling.memo_of(temporal, description)["spec_hash"] != memo["spec_hash"]

    assert (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code == 204
    assert await scheduling.describe(temporal, uuid.UUID(task["id"])) is None


async def test_polls_replay(
    user: ApiUser,
    temporal: Client,
    imap_server: ImapServer,
    mailbox: str,
    target: HttpTarget,
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> None:
    """A poll's history replays against today's workflows (deterministic)."""
    await put_secret(user, imap_server.mailbox_settings("none", username=mailbox)["password"])
    task = await create(email_task(imap_server, mailbox, webhook_action(f"{target.url}/ok/y")))
    await poll(temporal, task["id"])
    query = f"WorkflowType = 'EmailPollWorkflow' AND CronpilotTaskId = '{task['id']}'"

    async def closed() -> list[Any] | None:
        found = [w async for w in temporal.list_workflows(query) if w.close_time is not None]
        return found or None

    [listed, *_] = await eventually(closed)
    history = await temporal.get_workflow_handle(listed.id, run_id=listed.run_id).fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=temporal.data_converter)
    await replayer.replay_workflow(history)
