"""Templates, secrets and redaction, through the webhook action against a real HTTP server."""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio.client import Client

from activities._templates import secret_forms
from tests.conftest import ApiUser, eventually
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring


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


async def test_a_target_echoing_the_secret_does_not_leak_it(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    await harness.put_secret("PASSWORD", "hunter2-but-longer")
    ok = await harness.run(
        _webhook(f"{target.url}/ok/{key}?echo={{{{ secrets.PASSWORD }}}}", method="GET")
    )
    assert "hunter2-but-longer" not in ok.model_dump_json()
    failed = await failure_of(
        harness, _webhook(f"{target.url}/seq/{key}x?codes=400&pw={{{{ secrets.PASSWORD }}}}")
    )
    assert "hunter2-but-longer" not in str(failed) + str(failed.details)
    assert "***" in str(failed.details)


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


SECRET = 'Pa55 w0rd&x="q"/é'


async def test_a_secret_echoed_in_any_encoding_is_redacted_everywhere(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    """The target echoes the secret URL-encoded, JSON-escaped and raw: the stored execution
    and Temporal's history hold none of its forms."""
    assert (await user.request("PUT", "/api/secrets/PW", json={"value": SECRET})).status_code == 201
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/echo/{key}?q={{{{ secrets.PW | urlencode }}}}",
        interval_seconds=86400,
        config={"body": {"pw": "{{ secrets.PW }}", "note": "sent as {{ secrets.PW }}"}},
    )
    task = await user.create_task(body)
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    await temporal.get_workflow_handle(started["workflow_id"]).result()
    sent = target.requests[key][0]
    assert sent["query"]["q"] == SECRET and json.loads(sent["body"])["pw"] == SECRET

    async def recorded() -> dict[str, Any] | None:
        runs = await user.executions(task["id"])
        return runs[0] if runs and runs[0]["status"] != "running" else None

    run = await eventually(recorded)
    assert run["status"] == "succeeded"
    history = (await temporal.get_workflow_handle(started["workflow_id"]).fetch_history()).to_json()
    stored = json.dumps(run, ensure_ascii=False)
    for form in secret_forms(SECRET):
        assert form not in stored, form
        assert form not in history, form
    assert "***" in stored


async def test_a_secret_in_a_template_error_is_redacted(harness: ActionHarness) -> None:
    await harness.put_secret("PW", SECRET)
    failure = await failure_of(
        harness, _webhook("http://127.0.0.1:9/", body="{{ payload[secrets.PW] }}"), payload={}
    )
    assert failure.type == "TemplateError"
    text = str(failure) + json.dumps(failure.details, ensure_ascii=False)
    for form in secret_forms(SECRET):
        assert form not in text, form
