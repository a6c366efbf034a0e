"""Every action type through the API: create the task, run it, read the execution.

The session's worker is configured with real peers on loopback (conftest): an HTTP server,
an SMTP server, a fake Messages API and a fake Google API."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema.orm import TaskExecution
from tests.conftest import ApiUser, eventually
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.fake_google import FakeGoogle
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.smtp_server import SmtpServer


async def _run(user: ApiUser, action: dict[str, Any], max_attempts: int = 1) -> dict[str, Any]:
    task = await user.create_task(
        {
            "name": f"e2e {action['type']}",
            "type": "recurring",
            "schedule": {"interval_seconds": 86400},
            "action": action,
            "retry": {"max_attempts": max_attempts},
        }
    )
    started = await user.post(f"/api/tasks/{task['id']}/run")
    assert started.status_code == 202, started.text

    async def final() -> dict[str, Any] | None:
        runs = await user.executions(task["id"])
        return runs[0] if runs and runs[0]["status"] != "running" else None

    execution = await eventually(final, timeout=45)
    detail = await user.get(f"/api/executions/{execution['id']}")
    assert detail.status_code == 200
    body: dict[str, Any] = detail.json()
    return body


async def test_ai_prompt(user: ApiUser, claude_peer: FakeAnthropic) -> None:
    topic = uuid.uuid4().hex
    run = await _run(
        user,
        {
            "type": "ai_prompt",
            "config": {
                "prompt": "Summarise {{ task.name }} " + topic,
                "system": "Be brief",
                "max_tokens": 50,
            },
        },
    )
    assert run["status"] == "succeeded", run["error"]
    assert topic in run["result"]["text"] and run["result"]["stop_reason"]
    assert claude_peer.api_key not in str(run)


async def test_send_email(user: ApiUser, smtp_peer: SmtpServer) -> None:
    subject = f"Report {uuid.uuid4().hex}"
    run = await _run(
        user,
        {
            "type": "send_email",
            "config": {
                "to": ["ann@example.com"],
                "subject": subject,
                "text": "hello",
                "html": "<p>hello</p>",
            },
        },
    )
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["accepted"] == ["ann@example.com"]
    [mail] = [m for m in smtp_peer.received if m.message["Subject"] == subject]
    assert mail.message["Message-ID"] == run["result"]["message_id"]


async def test_web_scrape_and_report(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    scraped = await _run(
        user,
        {
            "type": "web_scrape",
            "config": {
                "url": f"{target.url}/html/{key}",
                "selectors": {"news": "p.news"},
                "all": True,
            },
        },
    )
    assert scraped["status"] == "succeeded", scraped["error"]
    assert scraped["result"]["title"] == f"Page {key}"
    assert scraped["result"]["data"]["news"] == [f"Prices rose {key}", "Rain expected"]
    report = await _run(
        user,
        {
            "type": "generate_report",
            "config": {
                "title": "Daily",
                "instructions": "Summarise",
                "sources": [
                    {"kind": "url", "url": f"{target.url}/html/{key}", "selector": "p.news"}
                ],
            },
        },
    )
    assert report["status"] == "succeeded", report["error"]
    assert f"Prices rose {key}" in report["result"]["content"]


async def test_file_operation(user: ApiUser) -> None:
    written = await _run(
        user,
        {
            "type": "file_operation",
            "config": {
                "operation": "write",
                "path": "reports/today.txt",
                "content": "{{ task.name }}",
            },
        },
    )
    assert written["status"] == "succeeded", written["error"]
    read = await _run(
        user,
        {"type": "file_operation", "config": {"operation": "read", "path": "reports/today.txt"}},
    )
    assert read["result"]["content"] == "e2e file_operation"
    escape = await _run(
        user,
        {"type": "file_operation", "config": {"operation": "read", "path": "../../etc/passwd"}},
    )
    assert escape["status"] == "failed" and escape["error"]["type"] == "PathNotAllowed"
    assert escape["attempts"] == 1


async def test_google_workspace(user: ApiUser, google_peer: FakeGoogle) -> None:
    put = await user.request(
        "PUT",
        "/api/secrets/GOOGLE",
        json={"value": f'{{"access_token": "{google_peer.STATIC_TOKEN}"}}'},
    )
    assert put.status_code == 201
    run = await _run(
        user,
        {
            "type": "google_workspace",
            "config": {
                "service": "sheets",
                "operation": "read_range",
                "credentials_secret": "GOOGLE",
                "params": {"spreadsheet_id": "sheet-1", "range": "Sheet1!A1:B2"},
            },
        },
    )
    assert run["status"] == "succeeded", run["error"]
    assert google_peer.STATIC_TOKEN not in str(run)


async def test_missing_secret_fails_without_retrying(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    action = {
        "type": "webhook",
        "config": {
            "url": f"{target.url}/ok/{key}",
            "headers": {"X-Key": "{{ secrets.NOT_THERE }}"},
        },
    }
    run = await _run(user, action, max_attempts=5)
    assert (run["status"], run["attempts"], run["error"]["type"]) == ("failed", 1, "MissingSecret")
    assert target.hits(key) == 0


async def test_run_code_on_the_code_queue(user: ApiUser) -> None:
    code = "import json, sys\ndata = json.load(sys.stdin)\nprint(json.dumps({'total': sum(data)}))"
    run = await _run(
        user,
        {
            "type": "run_code",
            "config": {
                "language": "python",
                "code": code,
                "input": [1, 2, 3],
                "timeout_seconds": 10,
            },
        },
    )
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["output"] == {"total": 6} and run["result"]["exit_code"] == 0
    failing = await _run(
        user,
        {
            "type": "run_code",
            "config": {"language": "javascript", "code": "process.exit(3)", "timeout_seconds": 10},
        },
    )
    assert (failing["status"], failing["error"]["type"]) == ("failed", "CodeFailed")


async def test_a_secret_echoed_back_is_not_stored(
    user: ApiUser, target: HttpTarget, sessions: async_sessionmaker[AsyncSession]
) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    assert (
        await user.request("PUT", "/api/secrets/TOKEN", json={"value": secret})
    ).status_code == 201
    key = uuid.uuid4().hex
    run = await _run(
        user,
        {
            "type": "webhook",
            "config": {
                "url": f"{target.url}/echo/{key}?t={{{{ secrets.TOKEN }}}}",
                "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
                "body": {"token": "{{ secrets.TOKEN }}"},
            },
        },
    )
    assert run["status"] == "succeeded", run["error"]
    sent = target.requests[key][0]
    assert sent["headers"]["authorization"] == f"Bearer {secret}"  # the target did get it
    echoed = run["result"]["body"]
    assert echoed["headers"]["authorization"] == "Bearer ***" and echoed["query"] == {"t": "***"}
    assert secret not in str(run)
    async with sessions() as session:
        row = await session.get(TaskExecution, uuid.UUID(run["id"]))
    assert row is not None and secret not in json.dumps([row.result, row.logs, row.error])


@pytest.mark.parametrize(
    "action",
    [
        {"type": "ai_prompt", "config": {"prompt": "x", "tokens": 5}},
        {
            "type": "send_email",
            "config": {"to": ["a@example.com"], "subject": "s", "text": "t", "attachments": []},
        },
        {"type": "run_code", "config": {"language": "python", "code": "1", "sandbox": False}},
        {"type": "web_scrape", "config": {"url": "https://example.com", "selector": "h1"}},
        {
            "type": "generate_report",
            "config": {
                "title": "t",
                "instructions": "i",
                "sources": [{"kind": "text", "txt": "x"}],
            },
        },
        {"type": "file_operation", "config": {"operation": "read", "path": "a", "mode": "r"}},
        {
            "type": "google_workspace",
            "config": {
                "service": "gmail",
                "operation": "send_email",
                "credentials_secret": "G",
                "scope": "all",
            },
        },
    ],
)
async def test_every_config_is_strict(user: ApiUser, action: dict[str, Any]) -> None:
    body = {
        "name": "strict",
        "type": "recurring",
        "schedule": {"interval_seconds": 60},
        "action": action,
    }
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["errors"]]
    assert any(loc[:4] == ["body", "action", action["type"], "config"] for loc in locs), locs
    assert (await user.get("/api/tasks")).json()["items"] == []
