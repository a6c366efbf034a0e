"""The ``ai_prompt`` action through the official SDK, against a loopback server speaking
Anthropic's Messages API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from activities._action import ActionRun
from activities.ai_prompt import prompt
from schema.actions import AiPromptConfig
from tests.conftest import ApiUser
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.loopback import free_port


@pytest.fixture
def claude(claude_peer: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Messages API (prompts are unique per test)."""
    return claude_peer


def _action(text: str, **config: Any) -> dict[str, Any]:
    return {"type": "ai_prompt", "config": {"prompt": text, **config}}


def _unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def _api(claude: FakeAnthropic, **overrides: Any) -> dict[str, Any]:
    return {"anthropic_api_key": claude.api_key, "anthropic_base_url": claude.url, **overrides}


async def test_a_prompt_is_sent_in_the_messages_wire_format(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    topic = uuid.uuid4().hex
    outcome = await harness.run(
        _action("Summarise {{ payload.topic }}"),
        payload={"topic": topic},
        handler=prompt,
        **_api(claude),
    )
    [sent] = claude.requests_for(f"Summarise {topic}")
    assert sent["body"] == {
        "model": harness.settings.anthropic_model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": f"Summarise {topic}"}],
    }
    headers = sent["headers"]
    key_sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert key_sent == claude.api_key and headers.get("anthropic-version")
    assert outcome.result == {
        "text": f"Echo: Summarise {topic}",
        "model": harness.settings.anthropic_model,
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 2, "output_tokens": 3},
    }
    assert claude.api_key not in outcome.model_dump_json()


async def test_system_model_and_max_tokens_are_sent_when_given(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    text = _unique("Classify")
    action = _action(text, system="You sort mail.", model="claude-haiku-4-5", max_tokens=50)
    outcome = await harness.run(action, handler=prompt, **_api(claude))
    [sent] = claude.requests_for(text)
    assert sent["body"] == {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "system": "You sort mail.",
        "messages": [{"role": "user", "content": text}],
    }
    assert outcome.result["model"] == "claude-haiku-4-5"
    assert outcome.result["usage"] == {"input_tokens": 5, "output_tokens": 3}


async def test_a_temperature_is_refused_when_the_task_is_saved(user: ApiUser) -> None:
    body = {
        "name": "creative",
        "type": "recurring",
        "schedule": {"interval_seconds": 3600},
        "action": {"type": "ai_prompt", "config": {"prompt": "Be creative", "temperature": 0.2}},
    }
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors[0]["loc"] == ["body", "action", "ai_prompt", "config", "temperature"]
    assert "temperature" in errors[0]["msg"]


async def test_an_answer_cut_at_max_tokens_is_returned_with_a_warning(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    outcome = await harness.run(
        _action(_unique("Write a long essay about"), max_tokens=2), handler=prompt, **_api(claude)
    )
    assert outcome.result["stop_reason"] == "max_tokens"
    assert outcome.result["text"] == "Echo: Write"
    assert any(e.level == "warning" and "max_tokens" in e.message for e in outcome.logs)


async def test_a_rate_limit_retries_after_the_servers_delay(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    text = _unique("Busy")
    claude.fail(text, 429, "rate_limit_error", "Number of requests", {"retry-after": "7"})
    failure = await failure_of(harness, _action(text), handler=prompt, **_api(claude))
    assert (failure.type, failure.non_retryable) == ("AnthropicRateLimited", False)
    assert failure.next_retry_delay == timedelta(seconds=7)
    assert "rate_limit_error" in failure.message
    assert len(claude.requests_for(text)) == 1, "the SDK must not retry on its own"


@pytest.mark.parametrize(
    ("status", "error_type", "expected", "retried"),
    [
        (529, "overloaded_error", "AnthropicOverloaded", True),
        (500, "api_error", "AnthropicServerError", True),
        (400, "invalid_request_error", "AnthropicInvalidRequest", False),
        (403, "permission_error", "AnthropicPermissionDenied", False),
        (404, "not_found_error", "AnthropicNotFound", False),
    ],
)
async def test_api_errors_are_classified(
    harness: ActionHarness,
    claude: FakeAnthropic,
    status: int,
    error_type: str,
    expected: str,
    retried: bool,
) -> None:
    text = _unique(error_type)
    claude.fail(text, status, error_type, f"scripted {error_type}")
    failure = await failure_of(harness, _action(text), handler=prompt, **_api(claude))
    assert (failure.type, failure.non_retryable) == (expected, not retried)
    assert f"scripted {error_type}" in failure.message
    assert len(claude.requests_for(text)) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Gateway says hello</body></html>", "text/html"),
        (b'{"hello": "world"}', "application/json"),
        (b"[]", "application/json"),
    ],
    ids=["html", "other-json", "list"],
)
async def test_a_200_that_is_no_message_is_a_retryable_connection_error(
    harness: ActionHarness, claude: FakeAnthropic, body: bytes, content_type: str
) -> None:
    """A proxy's page (or JSON of another shape) answered with a 200: the SDK passes it
    through; the action says what came back instead of failing as an unexpected error."""
    text = _unique("Proxy")
    claude.answer_raw(text, body, content_type)
    failure = await failure_of(harness, _action(text), handler=prompt, **_api(claude))
    assert (failure.type, failure.non_retryable) == ("HttpConnectionError", False)
    assert "not a Messages API response" in failure.message


async def test_a_wrong_key_is_a_permanent_auth_error(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    wrong = f"sk-ant-wrong-{uuid.uuid4().hex}"
    failure = await failure_of(
        harness,
        _action(_unique("Hello")),
        handler=prompt,
        **_api(claude, anthropic_api_key=wrong),
    )
    assert (failure.type, failure.non_retryable) == ("AnthropicAuthError", True)
    assert "authentication_error" in failure.message
    assert wrong not in failure.message + str(failure.details)


async def test_a_server_echoing_the_key_does_not_leak_it(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    text = _unique("Echo my key")
    claude.fail(text, 400, "invalid_request_error", f"bad request from {claude.api_key}")
    failure = await failure_of(harness, _action(text), handler=prompt, **_api(claude))
    assert failure.type == "AnthropicInvalidRequest"
    assert claude.api_key not in failure.message + str(failure.details)
    assert "***" in failure.message


async def test_without_a_key_nothing_is_sent(harness: ActionHarness, claude: FakeAnthropic) -> None:
    text = _unique("Unconfigured")
    failure = await failure_of(
        harness, _action(text), handler=prompt, **_api(claude, anthropic_api_key=None)
    )
    assert (failure.type, failure.non_retryable) == ("AnthropicNotConfigured", True)
    assert claude.requests_for(text) == []


async def test_an_unreachable_api_is_a_retryable_connection_error(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    failure = await failure_of(
        harness, _action("Anyone there?"), handler=prompt, **_api(claude, anthropic_base_url=closed)
    )
    assert (failure.type, failure.non_retryable) == ("HttpConnectionError", False)
    assert "ConnectError" in failure.message


async def test_the_network_guard_applies_to_claude(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    text = _unique("Guarded")
    failure = await failure_of(
        harness, _action(text), handler=prompt, **_api(claude, allow_private_networks=False)
    )
    assert (failure.type, failure.non_retryable) == ("BlockedAddress", True)
    assert claude.requests_for(text) == []


async def test_the_shared_http_client_stays_open(
    harness: ActionHarness, claude: FakeAnthropic
) -> None:
    async def prompt_then_check(run: ActionRun, config: AiPromptConfig) -> dict[str, Any]:
        shared = run.deps.http
        result = await prompt(run, config)
        return {**result, "shared_client_closed": shared.is_closed}

    outcome = await harness.run(
        _action(_unique("Twice")), handler=prompt_then_check, **_api(claude)
    )
    assert outcome.result["shared_client_closed"] is False
