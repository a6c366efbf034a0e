"""Templates and secrets, through the webhook action against a real HTTP server (redaction:
test_redaction.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from activities._templates import MAX_RENDERED_CHARS, TemplateTooLarge, render
from tests.conftest import ApiUser, eventually
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.fake_google import FakeGoogle
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring


def _webhook(url: str, **config: object) -> dict[str, object]:
    return {"type": "webhook", "config": {"url": url, "method": "POST", **config}}


async def test_templates_render_context_payload_and_secrets(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    await harness.put_secret("API_TOKEN", "s3cr3t-token-value")
    action = _webhook(
        f"{target.url}/ok/{{{{ payload.route }}}}",
        headers={"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
        body={
            "task": "{{ task.name }}",
            "amount": "{{ payload.amount * 2 }}",
            "trigger": "{{ run.trigger }}",
            "echo": "{{ secrets.API_TOKEN }}",
        },
    )
    outcome = await harness.run(action, payload={"route": key, "amount": 21})
    sent = target.requests[key][0]
    assert sent["headers"]["authorization"] == "Bearer s3cr3t-token-value"
    assert '"amount":"42"' in sent["body"] and '"task":"harness"' in sent["body"]
    assert '"trigger":"manual"' in sent["body"]
    assert "s3cr3t-token-value" not in outcome.model_dump_json()


async def test_missing_secret_undefined_names_and_sandbox_fail_at_once(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    missing = await failure_of(
        harness, _webhook(f"{target.url}/ok/{key}", headers={"X": "{{ secrets.NOPE }}"})
    )
    assert (missing.type, missing.non_retryable) == ("MissingSecret", True)
    undefined = await failure_of(
        harness, _webhook(f"{target.url}/ok/{key}", body="{{ payload.nothing.here }}")
    )
    assert (undefined.type, undefined.non_retryable) == ("TemplateError", True)
    for escape in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ task.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ):
        blocked = await failure_of(harness, _webhook(f"{target.url}/ok/{key}", body=escape))
        assert blocked.non_retryable and blocked.type in ("TemplateSecurityError", "TemplateError")
    assert target.hits(key) == 0, "nothing may be sent when rendering fails"


@pytest.mark.parametrize("broken", ["{{ 1 + }}", "{% if %}", "{{ x }", "{{ b'x' }}"])
async def test_a_syntax_error_fails_the_first_attempt_for_good(
    harness: ActionHarness, target: HttpTarget, broken: str
) -> None:
    """Met before anything is rendered (the secrets a template names are looked up first),
    a syntax error is a TemplateError like any other: no retry, nothing sent."""
    key = uuid.uuid4().hex
    failure = await failure_of(
        harness, _webhook(f"{target.url}/ok/{key}", body=broken), max_attempts=3
    )
    assert (failure.type, failure.non_retryable) == ("TemplateError", True)
    assert "TemplateSyntaxError" in failure.message
    assert target.hits(key) == 0


async def test_secrets_api_is_write_only_and_per_user(user: ApiUser, make_user: object) -> None:
    created = await user.request("PUT", "/api/secrets/SMTP_PASS", json={"value": "pa55word!"})
    assert created.status_code == 201 and set(created.json()) == {
        "name",
        "created_at",
        "updated_at",
    }
    replaced = await user.request("PUT", "/api/secrets/SMTP_PASS", json={"value": "other"})
    assert replaced.status_code == 200
    listed = (await user.get("/api/secrets")).json()["items"]
    assert [s["name"] for s in listed] == ["SMTP_PASS"] and "pa55word" not in str(listed)
    other = await make_user()  # type: ignore[operator]
    assert (await other.get("/api/secrets")).json()["items"] == []
    assert (await other.request("DELETE", "/api/secrets/SMTP_PASS")).status_code == 404
    bad = await user.request("PUT", "/api/secrets/bad-name", json={"value": "x"})
    assert bad.status_code == 422
    assert (await user.request("PUT", "/api/secrets/X", json={"value": ""})).status_code == 422
    assert (await user.request("DELETE", "/api/secrets/SMTP_PASS")).status_code == 204
    assert (await user.get("/api/secrets")).json()["items"] == []


@pytest.mark.parametrize(
    "template",
    [
        '{{ "x" * 100000000 }}',
        "{{ [0] * 100000000 }}",
        "{{ 'x' * 1000000 ~ 'y' * 1000000 }}",
        "{{ 'x' * 1000000 + 'y' * 1000000 }}",
        "{{ 'x'.ljust(100000000) }}",
        "{{ 'x'.center(100000000) }}",
        "{{ '{:>100000000}'.format(1) }}",
        "{{ '{:>{w}}'.format(1, w=100000000) }}",
        "{{ '%0100000000d' % 1 }}",
        "{{ '%*d' % (100000000, 1) }}",
        "{{ ','.join(['x' * 1000] * 2000) }}",
        "{{ ('x' * 1000000).replace('x', 'yy') }}",
        "{{ 'x'|center(100000000) }}",
        "{{ ('x\n' * 500000)|indent(100) }}",
        "{{ ('x' * 100000)|wordwrap(1, wrapstring='y' * 100) }}",
        "{{ (['x' * 1000] * 2000)|join(',') }}",
        "{{ ('%s' * 100000) | format(*(['x' * 100] * 100000)) }}",
        "{{ [1]|slice(100000000)|list }}",
        "{{ ([[1] * 1000] * 2000)|sum(start=[]) }}",
        "{{ 10 ** 1000000 }}",
        "{{ lipsum(n=100000) }}",
        "{% set a = 'x' * 1000000 %}{% set b = a ~ a %}{{ b }}",
        "{% set l = [1] %}{% for i in range(64) %}{{ l.extend(l) }}{% endfor %}",
        "{% set l = [] %}{% for i in range(100000) %}{{ l.append('x' * 100000) }}{% endfor %}",
        "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% else %}"
        "{{ 'x' * 1000 }}{% endif %}{% endmacro %}{{ m(25) }}",
        "{% set ns = namespace(s='') %}{% for i in range(100000) %}"
        "{% set ns.s = ns.s ~ 'x' * 10000 %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{% for i in range(100000) %}{{ f(50) }}{% endfor %}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    ],
)
def test_rendering_refuses_to_build_what_is_too_large(template: str) -> None:
    with pytest.raises(TemplateTooLarge):
        render({"body": template}, {})


def test_rendering_within_the_limits_is_untouched() -> None:
    context = {"payload": {"items": ["a", "b"], "n": 3}}
    rendered = render(
        {
            "a": "{{ 'ab' * 3 }}|{{ 'x'.ljust(3) }}|{{ '%03d' % payload.n }}|"
            "{{ '{:>4}'.format(1) }}",
            "b": "{{ payload['items']|join(', ') }}{% set s %}{{ payload.n }}{% endset %}{{ s }}",
            "c": "{{ ('x' * 1000000)|length }} {{ [1, 2] + [3] }} {{ 2 ** 64 }}",
            "d": "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m('x') ~ m('y') }}",
            "e": "{% for a in payload['items'] %}{{ loop.index }}/{{ loop.length }} "
            "{% else %}none{% endfor %}{% for a in [] %}{% else %}none{% endfor %}",
        },
        context,
    )
    assert rendered == {
        "a": "ababab|x  |003|   1",
        "b": "a, b3",
        "c": "1000000 [1, 2, 3] 18446744073709551616",
        "d": "<x><y>",
        "e": "1/2 2/2 none",
    }


async def test_a_template_too_large_fails_the_run_at_once(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    failure = await failure_of(
        harness, _webhook(f"{target.url}/ok/{key}", body='{{ "x" * 100000000 }}'), max_attempts=3
    )
    assert (failure.type, failure.non_retryable) == ("InvalidConfig", True)
    assert "rendering templates" in failure.message and str(MAX_RENDERED_CHARS) in failure.message
    arithmetic = await failure_of(harness, _webhook(f"{target.url}/ok/{key}", body="{{ 1 / 0 }}"))
    assert (arithmetic.type, arithmetic.non_retryable) == ("TemplateError", True)
    assert target.hits(key) == 0


async def test_a_template_too_large_fails_a_real_run_once(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/ok/{key}",
        interval_seconds=86400,
        retry=fast_retry(3),
        config={"body": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"},
    )
    task = await user.create_task(body)
    run = await user.run_to_end(task["id"])
    assert (run["status"], run["attempts"], run["error"]["type"]) == ("failed", 1, "InvalidConfig")
    assert "more than" in run["error"]["message"]
    assert target.hits(key) == 0


async def test_a_template_keeps_its_trailing_newline(harness: ActionHarness) -> None:
    # The README's own example: one line per run.
    append = {
        "type": "file_operation",
        "config": {
            "operation": "append",
            "path": "logs/{{ task.name }}.log",
            "content": "{{ run.trigger }} {{ payload }}\n",
        },
    }
    await harness.run(append)
    await harness.run(append, payload={"n": 1})
    written = harness.settings.files_root / str(harness.user_id) / "logs" / "harness.log"
    assert written.read_text() == "manual {}\nmanual {'n': 1}\n"


async def test_payload_is_an_empty_object_for_scheduled_and_manual_runs(
    user: ApiUser, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/echo/{key}",
        interval_seconds=2,
        config={"body": "{{ run.trigger }}: {{ payload }} {{ payload | length }}"},
    )
    task = await user.create_task(body)
    await user.post(f"/api/tasks/{task['id']}/run")

    def seen() -> set[str]:
        return {request["body"] for request in target.requests[key]}

    try:
        await eventually(lambda: asyncio.sleep(0, len(seen()) >= 2), timeout=30)
    finally:
        await user.request("DELETE", f"/api/tasks/{task['id']}")
    assert seen() == {"manual: {} 0", "schedule: {} 0"}


async def test_secrets_are_read_once_per_attempt(
    harness: ActionHarness, google_peer: FakeGoogle
) -> None:
    """One query, however many templates and ``secret()`` calls name secrets."""
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google_peer.STATIC_TOKEN}))
    await harness.put_secret("SHEET", "sheet-1")
    await harness.put_secret("TAB", "Tab")
    engine: AsyncEngine = harness.sessions.kw["bind"]
    statements: list[str] = []

    def record(*args: Any) -> None:
        statement = str(args[2])
        if "FROM secrets" in statement:
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        outcome = await harness.run(
            {
                "type": "google_workspace",
                "config": {
                    "service": "sheets",
                    "operation": "read_range",
                    "credentials_secret": "GOOGLE",
                    "params": {
                        "spreadsheet_id": "{{ secrets.SHEET }}",
                        "range": "{{ secrets.TAB }}!A1:B2",
                    },
                },
            },
            google_api_base_url=google_peer.url,
            google_token_url=google_peer.token_url,
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 1, statements
    assert "sheet-1" not in json.dumps(outcome.model_dump(mode="json"))
