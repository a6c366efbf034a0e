"""One failure vocabulary for every action: ``ActionFailure`` raised by any helper, turned into
Temporal's ApplicationError by the runtime alone; the same names for the same HTTP trouble in
every HTTP-based action; short quotes of what a server answered; unexpected errors named
after their class, retried, and logged once with their traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from activities._action import ActionRun
from activities._failure import EXCERPT_CHARS, ActionFailure, excerpt
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.fake_google import FakeGoogle
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.loopback import free_port

ActionOf = Callable[..., dict[str, Any]]


def _webhook(url: str, **config: Any) -> dict[str, Any]:
    return {"type": "webhook", "config": {"url": url, "method": "GET", **config}}


def _scrape(url: str, **config: Any) -> dict[str, Any]:
    return {"type": "web_scrape", "config": {"url": url, **config}}


def _report(url: str) -> dict[str, Any]:
    return {
        "type": "generate_report",
        "config": {"title": "T", "instructions": "I", "sources": [{"kind": "url", "url": url}]},
    }


HTTP_ACTIONS: dict[str, ActionOf] = {"webhook": _webhook, "web_scrape": _scrape, "report": _report}


def test_an_excerpt_is_short_collapsed_and_without_markup() -> None:
    page = (
        "<!doctype html><html><head><style>p { x: 1 }</style><script>var s = '<b>';</script>"
        "</head><body>\n  <h1>Service   Unavailable</h1><!-- a comment --><p>a &amp; b</p>"
        + "<p>filler</p>\n"
        * 1000
    )
    text = excerpt(page)
    assert text.startswith("Service Unavailable a & b filler filler")
    assert len(text) == EXCERPT_CHARS and text.endswith("…")
    for left_out in ("<", "var s", "x: 1", "comment"):
        assert left_out not in text
    # Text that is not markup is quoted as it is, only collapsed.
    json_body = '{"error": "a < b", "detail": "<tag>"}'
    assert excerpt(json_body) == json_body
    assert excerpt("  short \n\t text ") == "short text"


@pytest.mark.parametrize("kind", HTTP_ACTIONS)
async def test_every_http_action_fails_with_the_same_names(
    harness: ActionHarness, target: HttpTarget, kind: str
) -> None:
    action = HTTP_ACTIONS[kind]
    key = uuid.uuid4().hex
    unavailable = await failure_of(
        harness, action(f"{target.url}/error_page/{key}?code=503&retry_after=2")
    )
    assert (unavailable.type, unavailable.non_retryable) == ("HttpStatusError", False)
    assert unavailable.next_retry_delay == timedelta(seconds=2), "Retry-After on a 503"
    assert "unexpected HTTP 503 Service Unavailable" in unavailable.message
    # The message quotes the page's text, not the page: no markup, no script, short.
    assert f"Service Unavailable Maintenance & upgrades ({key})" in unavailable.message
    assert "SCRIPT_MARKER" not in unavailable.message and "<" not in unavailable.message
    assert len(unavailable.message) < len(target.url) + 100 + EXCERPT_CHARS

    missing = await failure_of(harness, action(f"{target.url}/error_page/{key}?code=404"))
    assert (missing.type, missing.non_retryable) == ("HttpStatusError", True)
    timed_out = await failure_of(harness, action(f"{target.url}/error_page/{key}?code=408"))
    assert (timed_out.type, timed_out.non_retryable) == ("HttpStatusError", False)
    refused = await failure_of(harness, action(f"http://127.0.0.1:{free_port()}/"))
    assert (refused.type, refused.non_retryable) == ("HttpConnectionError", False)
    blocked = await failure_of(
        harness, action(f"{target.url}/ok/{key}"), allow_private_networks=False
    )
    assert (blocked.type, blocked.non_retryable) == ("BlockedAddress", True)


@pytest.mark.parametrize("kind", ["webhook", "web_scrape"])
async def test_no_answer_in_time_is_http_timeout(
    harness: ActionHarness, target: HttpTarget, kind: str
) -> None:
    key = uuid.uuid4().hex
    action = HTTP_ACTIONS[kind](f"{target.url}/slow/{key}?seconds=3", timeout_seconds=0.3)
    failure = await failure_of(harness, action)
    assert (failure.type, failure.non_retryable) == ("HttpTimeout", False)
    assert "within 0.3s" in failure.message


async def test_google_and_claude_name_network_failures_alike(
    harness: ActionHarness, google_peer: FakeGoogle, claude_peer: FakeAnthropic
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google_peer.STATIC_TOKEN}))
    sheets = {
        "type": "google_workspace",
        "config": {
            "service": "sheets",
            "operation": "read_range",
            "credentials_secret": "GOOGLE",
            "params": {"spreadsheet_id": "s", "range": "A1"},
        },
    }
    google = await failure_of(harness, sheets, google_api_base_url=closed)
    claude = await failure_of(
        harness,
        {"type": "ai_prompt", "config": {"prompt": "Anyone there?"}},
        anthropic_api_key=claude_peer.api_key,
        anthropic_base_url=closed,
    )
    for failure in (google, claude):
        assert (failure.type, failure.non_retryable) == ("HttpConnectionError", False)
        assert "ConnectError" in failure.message


@pytest.mark.parametrize(
    ("config", "payload", "named"),
    [
        ({"headers": {"X-Token": "{{ payload.v }}"}}, {"v": "a\r\nX: y"}, "headers.X-Token"),
        ({"headers": {"{{ payload.v }}": "1"}}, {"v": "Bäd"}, "not a header name"),
        ({"headers": {"{{ payload.v }}": "1"}}, {"v": "Bad Name"}, "not a header name"),
    ],
)
@pytest.mark.parametrize("kind", ["webhook", "web_scrape"])
async def test_a_header_a_template_makes_unsendable_is_invalid_config(
    harness: ActionHarness,
    target: HttpTarget,
    kind: str,
    config: dict[str, Any],
    payload: dict[str, Any],
    named: str,
) -> None:
    key = uuid.uuid4().hex
    action = HTTP_ACTIONS[kind](f"{target.url}/ok/{key}", **config)
    failure = await failure_of(harness, action, payload=payload, max_attempts=3)
    assert (failure.type, failure.non_retryable) == ("InvalidConfig", True)
    assert "after rendering templates" in failure.message and named in failure.message
    assert target.hits(key) == 0, "nothing is sent"


@pytest.mark.parametrize("port", ["0", "70000", "-1", "http"])
@pytest.mark.parametrize("kind", HTTP_ACTIONS)
async def test_a_port_a_template_puts_out_of_range_is_invalid_config(
    harness: ActionHarness, kind: str, port: str
) -> None:
    action = HTTP_ACTIONS[kind]("http://127.0.0.1:{{ payload.port }}/x")
    failure = await failure_of(harness, action, payload={"port": port}, max_attempts=3)
    assert (failure.type, failure.non_retryable) == ("InvalidConfig", True)
    assert "url" in failure.message and "port" in failure.message


async def test_header_values_may_be_any_text(harness: ActionHarness, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    await harness.run(_webhook(f"{target.url}/echo/{key}", headers={"X-Name": "Café\tüber"}))
    sent = target.requests[key][0]["headers"]["x-name"]
    # Sent as UTF-8 (the server reads header bytes as Latin-1).
    assert sent.encode("latin-1").decode("utf-8") == "Café\tüber"


async def test_a_helper_anywhere_fails_the_run_by_raising_action_failure(
    harness: ActionHarness, target: HttpTarget
) -> None:
    def deep_in_a_thread() -> None:
        raise ActionFailure(
            "QuotaUsedUp", "the quota is used up", retryable=True, retry_after=timedelta(seconds=3)
        )

    async def handler(run: ActionRun, _config: Any) -> Any:
        run.log("checking the quota")
        await asyncio.to_thread(deep_in_a_thread)

    failure = await failure_of(
        harness, _webhook(f"{target.url}/ok/x"), handler=handler, max_attempts=2
    )
    assert (failure.type, failure.non_retryable) == ("QuotaUsedUp", False)
    assert failure.message == "the quota is used up"
    assert failure.next_retry_delay == timedelta(seconds=3)
    messages = [entry["message"] for entry in failure.details[0]["logs"]]
    assert messages[-3:] == [
        "checking the quota",
        "QuotaUsedUp: the quota is used up",
        "retrying in 3.00s",
    ]


async def test_a_quote_is_redacted_before_it_is_cut(
    harness: ActionHarness, target: HttpTarget
) -> None:
    secret = "s3cr3t-" + "k" * 60
    await harness.put_secret("LONG", secret)

    async def handler(run: ActionRun, _config: Any) -> Any:
        await run.secret("LONG")
        # The cut at EXCERPT_CHARS falls inside the secret.
        raise ActionFailure("Echoed", "the server said", retryable=False, quote="x" * 180 + secret)

    failure = await failure_of(harness, _webhook(f"{target.url}/ok/x"), handler=handler)
    assert failure.message == "the server said: " + "x" * 180 + "***"
    assert "s3cr3t" not in json.dumps(failure.details)


async def test_an_unexpected_error_is_retried_named_after_its_class_and_logged_once(
    harness: ActionHarness, target: HttpTarget, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.put_secret("PW", "unexpected-secret-value")

    async def broken(run: ActionRun, _config: Any) -> Any:
        await run.secret("PW")
        found: dict[str, Any] = {}
        return found["lookup of unexpected-secret-value"]

    with caplog.at_level(logging.ERROR, logger="temporalio.activity"):
        failure = await failure_of(harness, _webhook(f"{target.url}/ok/x"), handler=broken)
    assert (failure.type, failure.non_retryable) == ("KeyError", False)
    assert "lookup of ***" in failure.message
    assert "unexpected-secret-value" not in failure.message + json.dumps(failure.details)
    [trace] = [r for r in caplog.records if "Traceback" in r.getMessage()]
    text = trace.getMessage()
    assert "in broken" in text and "KeyError" in text and "lookup of ***" in text
    assert "unexpected-secret-value" not in text
