"""generate_report against real peers: a page server, the database, a fake Messages API that
echoes its prompt (so the report shows what was gathered), and an SMTP server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from activities.generate_report import generate
from schema import crud
from schema.executions import ExecutionFinished
from schema.tasks import TaskSpec
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.smtp_server import SmtpServer


@pytest.fixture
def claude(claude_peer: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Messages API (prompts are unique per test)."""
    return claude_peer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _report(**config: Any) -> dict[str, Any]:
    return {
        "type": "generate_report",
        "config": {"title": "Weekly", "instructions": "Sum up.", **config},
    }


async def _task_with_history(harness: ActionHarness, user_id: uuid.UUID) -> uuid.UUID:
    spec = TaskSpec.model_validate(
        {
            "name": "nightly sync",
            "type": "recurring",
            "schedule": {"cron": "0 2 * * *"},
            "action": {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        }
    )
    now = datetime.now(UTC)
    async with harness.sessions.begin() as session:
        task = await crud.create_task(session, user_id=user_id, spec=spec)
        for age_days, status in ((1, "succeeded"), (2, "failed"), (40, "succeeded")):
            started = now - timedelta(days=age_days)
            await crud.record_finished(
                session,
                ExecutionFinished(
                    execution_id=uuid.uuid4(),
                    task_id=task.id,
                    user_id=user_id,
                    workflow_id=f"task-{task.id}-{age_days}",
                    run_id=str(uuid.uuid4()),
                    trigger="schedule",
                    scheduled_at=started,
                    started_at=started,
                    task_type="recurring",
                    status=status,
                    finished_at=started + timedelta(seconds=2),
                    attempts=1,
                    error={"type": "HttpStatusError", "message": "HTTP 503"}
                    if status == "failed"
                    else None,
                ),
            )
    return task.id


async def test_report_from_text_page_and_history_is_emailed(
    harness: ActionHarness, claude: FakeAnthropic, target: HttpTarget, smtp: SmtpServer
) -> None:
    key = uuid.uuid4().hex
    task_id = await _task_with_history(harness, harness.user_id)
    outcome = await harness.run(
        _report(
            sources=[
                {"kind": "text", "text": f"Revenue was up {key}."},
                {"kind": "url", "url": f"{target.url}/html/{key}", "selector": "p.news"},
                {"kind": "url", "url": f"{target.url}/html/{key}-whole"},
                {"kind": "task_history", "task_id": str(task_id), "days": 7},
            ],
            email_to=["boss@example.com"],
        ),
        handler=generate,
        anthropic_api_key=claude.api_key,
        anthropic_base_url=claude.url,
        **smtp.settings(),
    )
    result = outcome.result
    content = " ".join(result["content"].split())  # the fake echoes the prompt's words
    assert result["title"] == "Weekly" and result["format"] == "markdown"
    assert f"Revenue was up {key}." in content
    selected, whole = content.split("## Source 2:")[1].split("## Source 3:")
    assert f"Prices rose {key} Rain expected" in selected and "Unrelated footer" not in selected
    assert "Headlines" in whole and "Unrelated footer" in whole and "var hidden" not in whole
    assert "runs in the last 7 days: 2 (failed 1, succeeded 1)" in content
    assert "error HttpStatusError: HTTP 503" in content
    assert [s["kind"] for s in result["sources_used"]] == ["text", "url", "url", "task_history"]
    [request] = claude.requests_for(claude.requests[-1]["body"]["messages"][0]["content"])
    assert "Markdown" in request["body"]["system"]

    [mail] = smtp.received
    assert mail.rcpt_tos == ["boss@example.com"]
    assert mail.message["Subject"] == "Weekly"
    assert f"Revenue was up {key}." in mail.message.get_content()
    assert result["email"]["accepted"] == ["boss@example.com"]


async def test_another_users_task_history_is_not_a_source(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    async with harness.sessions.begin() as session:
        other = await crud.create_user(session, name=f"other-{uuid.uuid4().hex[:8]}")
    foreign = await _task_with_history(harness, other.id)
    error = await failure_of(
        harness,
        _report(sources=[{"kind": "task_history", "task_id": str(foreign), "days": 7}]),
        handler=generate,
        anthropic_api_key=claude.api_key,
        anthropic_base_url=claude.url,
    )
    assert (error.type, error.non_retryable) == ("SourceNotFound", True)
    assert "nightly sync" not in str(error.details)


async def test_html_reports_and_source_failures(
    harness: ActionHarness, claude: FakeAnthropic, target: HttpTarget
) -> None:
    api: dict[str, Any] = {"anthropic_api_key": claude.api_key, "anthropic_base_url": claude.url}
    html = await harness.run(
        _report(format="html", sources=[{"kind": "text", "text": "x"}]), handler=generate, **api
    )
    assert html.result["format"] == "html"
    assert "HTML" in claude.requests[-1]["body"]["system"]
    blocked = await failure_of(
        harness,
        _report(sources=[{"kind": "url", "url": f"{target.url}/html/x"}]),
        handler=generate,
        allow_private_networks=False,
        **api,
    )
    assert (blocked.type, blocked.non_retryable) == ("BlockedAddress", True)
    missing = await failure_of(
        harness,
        _report(sources=[{"kind": "url", "url": f"{target.url}/seq/x?codes=404"}]),
        handler=generate,
        **api,
    )
    assert missing.non_retryable and missing.type == "HttpStatusError"
