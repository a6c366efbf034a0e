"""Action configs refuse, where they are written, what could never be sent: a URL without a
valid port, a header name that is not a token, a header value or an email header field with
a line break. Values holding template syntax are checked once rendered (``RENDERED``), and a
config stored before these checks still reads (``STORED``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schema.actions import (
    RENDERED,
    STORED,
    GenerateReportConfig,
    GoogleWorkspaceConfig,
    SendEmailConfig,
    WebhookConfig,
    WebScrapeConfig,
)
from schema.tasks import TaskCreate

URL = "https://example.com/hook"
EMAIL = {"to": ["a@example.com"], "subject": "s", "text": "t"}
REPORT = {"title": "T", "instructions": "I"}
GMAIL = {"service": "gmail", "operation": "send_email", "credentials_secret": "G"}
DRIVE = {"service": "drive", "operation": "upload_file", "credentials_secret": "G"}

REFUSED: list[tuple[type[BaseModel], dict[str, Any], tuple[Any, ...]]] = [
    (WebhookConfig, {"url": "https://example.com:70000/"}, ("url",)),
    (WebhookConfig, {"url": "http://example.com:0/"}, ("url",)),
    (WebhookConfig, {"url": "http://example.com:-1/"}, ("url",)),
    (WebhookConfig, {"url": "http://example.com:port/"}, ("url",)),
    (WebhookConfig, {"url": "http:///path"}, ("url",)),
    (WebhookConfig, {"url": "http://example.com/a\nb"}, ("url",)),
    (WebhookConfig, {"url": URL, "headers": {"X-Token": "a\r\nX-Y: 1"}}, ("headers", "X-Token")),
    (WebhookConfig, {"url": URL, "headers": {"X-Token": "a\nb"}}, ("headers", "X-Token")),
    (WebhookConfig, {"url": URL, "headers": {"X-Token": "a\x00b"}}, ("headers", "X-Token")),
    (WebhookConfig, {"url": URL, "headers": {"Ünïcode": "1"}}, ("headers", "Ünïcode", "[key]")),
    (WebhookConfig, {"url": URL, "headers": {"Two words": "1"}}, ("headers", "Two words", "[key]")),
    (WebhookConfig, {"url": URL, "headers": {"X:Y": "1"}}, ("headers", "X:Y", "[key]")),
    (WebScrapeConfig, {"url": "http://example.com:99999/"}, ("url",)),
    (WebScrapeConfig, {"url": "ftp://example.com/"}, ("url",)),
    (WebScrapeConfig, {"url": URL, "headers": {"Accept": "a\rb"}}, ("headers", "Accept")),
    (GenerateReportConfig, {**REPORT, "sources": [{"kind": "url", "url": "http://x:0/"}]},
     ("sources", 0, "url", "url")),
    (GenerateReportConfig, {**REPORT, "title": "Weekly\r\nBcc: x@y.z"}, ("title",)),
    (GenerateReportConfig, {**REPORT, "email_to": ["a@b.c\nBcc: x@y.z"]}, ("email_to", 0)),
    (SendEmailConfig, {**EMAIL, "subject": "Hi\r\nBcc: x@y.z"}, ("subject",)),
    (SendEmailConfig, {**EMAIL, "to": ["a@b.c\r\nBcc: x@y.z"]}, ("to", 0)),
    (SendEmailConfig, {**EMAIL, "cc": ["a@b.c", "b@c.d\n"]}, ("cc", 1)),
    (SendEmailConfig, {**EMAIL, "bcc": ["a@b.c\rX: y"]}, ("bcc", 0)),
    (SendEmailConfig, {**EMAIL, "reply_to": "a@b.c\nX: y"}, ("reply_to",)),
    (GoogleWorkspaceConfig, {**GMAIL, "params": {"to": "a@b.c", "subject": "s\nX: y"}},
     ("params",)),
    (GoogleWorkspaceConfig, {**GMAIL, "params": {"to": ["a@b.c\r\nX: y"], "subject": "s"}},
     ("params",)),
    (GoogleWorkspaceConfig, {**DRIVE, "params": {"mime_type": "text/plain\r\nX: y"}},
     ("params",)),
]  # fmt: skip


@pytest.mark.parametrize(("model", "config", "loc"), REFUSED)
def test_unsendable_literal_values_are_refused_where_they_are(
    model: type[BaseModel], config: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(config)
    assert loc in [error["loc"] for error in raised.value.errors()], raised.value.errors()


@pytest.mark.parametrize(("model", "config"), [(model, config) for model, config, _ in REFUSED])
def test_a_config_stored_before_the_checks_still_reads(
    model: type[BaseModel], config: dict[str, Any]
) -> None:
    assert model.model_validate(config, context=STORED)


def test_the_action_union_locates_the_error_as_the_api_reports_it() -> None:
    body = {
        "name": "x",
        "type": "recurring",
        "schedule": {"interval_seconds": 60},
        "action": {"type": "webhook", "config": {"url": URL, "headers": {"X": "a\r\nb"}}},
    }
    with pytest.raises(ValidationError) as raised:
        TaskCreate.model_validate(body)
    [error] = raised.value.errors()
    assert error["loc"] == ("action", "webhook", "config", "headers", "X")
    assert "line breaks" in error["msg"]


@pytest.mark.parametrize(
    ("model", "config"),
    [
        (WebhookConfig, {"url": "http://example.com:{{ payload.port }}/"}),
        (WebhookConfig, {"url": "{{ payload.url }}", "headers": {"{{ payload.h }}": "1"}}),
        (WebhookConfig, {"url": URL, "headers": {"X": "{{ payload.v }}\n"}}),
        (WebScrapeConfig, {"url": "{% if true %}http://x:0/{% endif %}"}),
        (SendEmailConfig, {**EMAIL, "subject": "{{ payload.subject }}\n"}),
    ],
)
def test_templates_are_checked_once_rendered(
    model: type[BaseModel], config: dict[str, Any]
) -> None:
    model.model_validate(config)
    with pytest.raises(ValidationError):
        model.model_validate(config, context=RENDERED)


def test_sendable_values_pass() -> None:
    config = WebhookConfig.model_validate(
        {
            "url": "http://[::1]:8080/path?q=a b",
            "headers": {"X-Api-Key_2": "v\twith tab", "X-Name": "Café", "!#$%&'*+-.^_`|~": "1"},
        },
        context=RENDERED,
    )
    assert config.headers["X-Name"] == "Café"
    assert WebhookConfig.model_validate({"url": "https://example.com:65535/"}, context=RENDERED)
    assert SendEmailConfig.model_validate({**EMAIL, "to": ["Ann Example <ann@example.com>"]})
