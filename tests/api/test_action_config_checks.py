"""A request value that could never be sent is a located 422 when the task is saved, not a
run that retries: a header with a line break or a name that is no token, a URL port outside
1-65535, an email header field with a line break."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiUser
from tests.fixtures.tasks import recurring

URL = "https://example.com/hook"


@pytest.mark.parametrize(
    ("action", "loc"),
    [
        (
            {"type": "webhook", "config": {"url": URL, "headers": {"X-Token": "a\r\nX-Evil: 1"}}},
            ["body", "action", "webhook", "config", "headers", "X-Token"],
        ),
        (
            {"type": "webhook", "config": {"url": URL, "headers": {"Tōken": "1"}}},
            ["body", "action", "webhook", "config", "headers", "Tōken", "[key]"],
        ),
        (
            {"type": "webhook", "config": {"url": "https://example.com:70000/"}},
            ["body", "action", "webhook", "config", "url"],
        ),
        (
            {"type": "web_scrape", "config": {"url": "http://example.com:0/"}},
            ["body", "action", "web_scrape", "config", "url"],
        ),
        (
            {
                "type": "send_email",
                "config": {"to": ["a@example.com"], "subject": "Hi\r\nBcc: x@y.z", "text": "t"},
            },
            ["body", "action", "send_email", "config", "subject"],
        ),
    ],
)
async def test_unsendable_values_are_a_located_422(
    user: ApiUser, action: dict[str, Any], loc: list[Any]
) -> None:
    body = {**recurring(URL, interval_seconds=86400), "action": action}
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert loc in [error["loc"] for error in errors], errors
    assert (await user.get("/api/tasks")).json()["items"] == []


async def test_the_same_value_from_a_template_is_accepted(user: ApiUser) -> None:
    config = {"url": URL, "headers": {"X-Token": "{{ payload.token }}"}}
    body = {
        **recurring(URL, interval_seconds=86400),
        "action": {"type": "webhook", "config": config},
    }
    response = await user.post("/api/tasks", json=body)
    assert response.status_code == 201, response.text
