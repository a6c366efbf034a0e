"""What a hostile client sends that JSON parsers accept but nothing downstream keeps (lone
surrogates, NaN), tokens with junk appended, sizes that hide where they are, random HTTP
methods that would grow the metrics, and the headers every page carries."""

from __future__ import annotations

import json
import logging
import random
import string
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.signatures import sign
from schema.crypto import resume_token
from schema.settings import Settings
from tests.api.test_bad_input import _assert_located
from tests.api.test_webhook_triggers import _hook, _path, trigger_task
from tests.conftest import ApiUser
from tests.fixtures.tasks import recurring

URL = "http://127.0.0.1:9/"


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('{"n": NaN}', ["body", "action", "config", "body", "n"]),
        ('{"n": [1, Infinity]}', ["body", "action", "config", "body", "n", 1]),
        ('{"n": -Infinity}', ["body", "action", "config", "body", "n"]),
        ('{"n": "\\ud800"}', ["body", "action", "config", "body", "n"]),
        ('{"\\udfff": 1}', ["body", "action", "config", "body", "\\udfff"]),
    ],
    ids=["nan", "infinity-in-list", "minus-infinity", "lone-surrogate", "surrogate-key"],
)
async def test_what_json_stores_cannot_keep_is_a_located_422(
    user: ApiUser, raw: str, loc: list[Any]
) -> None:
    """NaN and Infinity (which Python's parser accepts, and PostgreSQL's JSON would store as
    null or refuse) and lone surrogates (which fail serialization with a 500): a 422 at
    their place, and no task made."""
    task = recurring(URL)
    text = json.dumps(task).replace('"method": "POST"', f'"method": "POST", "body": {raw}')
    response = await user.post(
        "/api/tasks", content=text.encode(), headers={"Content-Type": "application/json"}
    )
    message = _assert_located(response, loc)
    assert "finite" in message or "surrogate" in message
    listed = await user.get("/api/tasks")
    assert listed.json()["items"] == []
    # The same refusal for a PUT, a PATCH and validate, and for an event's payload.
    made = await user.create_task(task)
    patched = await user.request(
        "PATCH",
        f"/api/tasks/{made['id']}",
        content=f'{{"action": {{"type": "webhook", "config": {{"url": "{URL}", "body": {raw}}}}}}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422, patched.text
    validated = await user.post(
        "/api/tasks/validate", content=text.encode(), headers={"Content-Type": "application/json"}
    )
    assert validated.status_code == 422, validated.text
    event = await user.post(
        "/api/events",
        content=f'{{"name": "x.y", "payload": {raw}}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    _assert_located(event, ["body", "payload", *loc[4:]])
    stored = (await user.get(f"/api/tasks/{made['id']}")).json()
    assert "body" not in stored["action"]["config"] or stored["action"]["config"]["body"] is None


async def test_a_lone_surrogate_in_a_delivery_or_a_resume_is_a_422(
    user: ApiUser, target: Any, settings: Settings
) -> None:
    task = await user.create_task(trigger_task(f"{target.url}/ok/{uuid.uuid4().hex}"))
    hook = await _hook(user, task["id"])
    body = b'{"text": "\\ud83d"}'
    headers = {"X-Cronpilot-Signature": sign(hook["secret"], body, int(time.time()))}
    response = await user.client.post(_path(hook), content=body, headers=headers)
    assert "surrogate" in _assert_located(response, ["body", "text"])
    body = b'{"\\udc00": 1}'
    headers = {"X-Cronpilot-Signature": sign(hook["secret"], body, int(time.time()))}
    response = await user.client.post(_path(hook), content=body, headers=headers)
    _assert_located(response, ["body", "\\udc00"])
    body = b'{"n": NaN}'
    headers = {"X-Cronpilot-Signature": sign(hook["secret"], body, int(time.time()))}
    response = await user.client.post(_path(hook), content=body, headers=headers)
    assert "finite" in _assert_located(response, ["body", "n"])
    # A resume body is checked before anything else.
    token = resume_token(settings, f"chain-{uuid.uuid4()}", "approve")
    response = await user.client.post(f"/api/resume/{token}", content=b'["\\udc00"]')
    _assert_located(response, ["body", 0])


@pytest.mark.parametrize(
    "junk", ["==junk!!", "A", ".extra", "%3D", " "], ids=["padding", "char", "dot", "pct", "sp"]
)
async def test_a_resume_token_with_anything_appended_is_unknown(
    user: ApiUser, settings: Settings, junk: str
) -> None:
    token = resume_token(settings, f"chain-{uuid.uuid4()}", "approve")
    response = await user.client.post(f"/api/resume/{token}{junk}", json={"ok": True})
    assert response.status_code == 404, response.text
    # A slash too many is no redirect (built from the Host header) to the token's URL.
    response = await user.client.post(
        f"/api/resume/{token}/", json={"ok": True}, headers={"Host": "evil.example"}
    )
    assert response.status_code == 404 and "location" not in response.headers
    # The signature's last character carries two bits that decode to nothing: flipping one
    # gives the same bytes, but not the token.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    same_bytes = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    response = await user.client.post(f"/api/resume/{same_bytes}", json={"ok": True})
    assert response.status_code == 404, response.text


async def test_an_oversize_task_is_located_where_its_bulk_is(user: ApiUser) -> None:
    """A condition whose `in` list holds 60,000 small values: the error names the list,
    not the task's largest single string."""
    task = recurring(URL, name="x" * 200)
    values = [f"value-{n}" for n in range(60_000)]
    task["condition"] = {"path": "payload.kind", "op": "in", "value": values}
    response = await user.post("/api/tasks", json=task)
    message = _assert_located(response, ["body", "condition", "value"])
    assert "over the limit" in message
    big = recurring(URL, config={"body": {"blob": "b" * 600_000}})
    response = await user.post("/api/tasks", json=big)
    _assert_located(response, ["body", "action", "config", "body", "blob"])


async def test_random_methods_do_not_grow_the_metrics(app_client: httpx.AsyncClient) -> None:
    methods = {"".join(random.choices(string.ascii_uppercase, k=13)) for _ in range(40)}
    for method in methods:
        response = await app_client.request(method, "/healthz")
        assert response.status_code == 405, response.text
        assert "GET" in response.headers["allow"].split(", ")
    for path in ("/no/such/path", f"/{uuid.uuid4().hex}"):
        assert (await app_client.get(path)).status_code == 404
    metrics = (await app_client.get("/metrics")).text
    series = [line for line in metrics.splitlines() if line.startswith("cronpilot_http_")]
    assert not [line for line in series if any(m in line for m in methods)]
    assert any('method="other",route="/healthz",status="405"' in line for line in series)
    assert not [line for line in series if "/no/such/path" in line]
    for line in series:
        method = line.split('method="', 1)[1].split('"', 1)[0]
        assert method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect", "/healthz"])
async def test_every_page_carries_the_security_headers(
    app_client: httpx.AsyncClient, path: str
) -> None:
    response = await app_client.get(path)
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    if path != "/healthz":
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-eval'" not in policy
        script = next(p for p in policy.split("; ") if p.startswith("script-src"))
        assert "'unsafe-inline'" not in script


async def test_a_body_over_the_limit_is_a_413_and_no_error_in_the_log(
    app_client: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Sent in chunks, without a length: refused as it is read, logged as nothing more."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    with caplog.at_level(logging.ERROR):
        response = await app_client.post(f"/api/webhooks/wh_{uuid.uuid4().hex}", content=chunks())
    assert response.status_code == 413, response.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_every_security_requirement_names_a_scheme_the_document_defines(
    app_client: httpx.AsyncClient,
) -> None:
    document = (await app_client.get("/openapi.json")).json()
    schemes = set(document["components"]["securitySchemes"])
    used = {
        name
        for operations in document["paths"].values()
        for operation in operations.values()
        for requirement in operation.get("security", [])
        for name in requirement
    }
    assert used and used <= schemes, (used, schemes)
