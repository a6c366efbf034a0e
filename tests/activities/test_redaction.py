"""Redaction: a secret is masked in logs, results and errors as written, in its base64, and
wherever the text reads as it once each character is decoded (percent-encoding, HTML
references, backslash escapes, in any mix). Unit tests of ``redact``, then real actions
whose targets echo a secret back, through the API and Temporal."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
from temporalio.client import Client

from activities._redaction import MASK, redact
from tests.conftest import ApiUser, eventually
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.encodings import (
    EncodingEcho,
    base64_core,
    every_form,
    hostile_forms,
    known_forms,
)
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring

# Punctuation every encoder escapes, a space, a backslash, a "+" and an escape of its own.
ASCII = "Zq7 &x=\"p/q'<\\>+%3B"
# Latin-1, the BMP beyond it, and a character beyond the BMP (a UTF-16 pair in JSON).
UNICODE = "pässwörd €-😀 ok"
SECRETS = {"ascii": ASCII, "unicode": UNICODE}


def _cases(forms: Any) -> list[Any]:
    return [
        pytest.param(secret, form, id=f"{label}-{name}")
        for label, secret in SECRETS.items()
        for name, form in forms(secret).items()
        if form
    ]


@pytest.mark.parametrize(("secret", "form"), _cases(hostile_forms))
def test_a_secret_in_a_hostile_form_is_masked(secret: str, form: str) -> None:
    assert redact(f"before {form} after", [secret]) == f"before {MASK} after"


@pytest.mark.parametrize(("secret", "form"), _cases(known_forms))
def test_a_secret_in_a_common_form_is_masked(secret: str, form: str) -> None:
    assert redact(f"before {form} after", [secret]) == f"before {MASK} after"


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("secret", [ASCII, UNICODE])
def test_base64_inside_a_longer_base64_text_is_masked(
    secret: str, encode: Any, prefix: bytes
) -> None:
    text = encode(prefix + secret.encode() + b"!tail").decode()
    redacted = redact(f"Authorization: Basic {text}", [secret])
    assert MASK in redacted and _secret_part(text, prefix, secret) not in redacted


def _secret_part(text: str, prefix: bytes, secret: str) -> str:
    """The characters of a base64 text that depend on the secret's bytes alone."""
    start, end = -(-len(prefix) * 8 // 6), (len(prefix) + len(secret.encode())) * 8 // 6
    return text[start:end]


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:"])
def test_percent_encoded_base64_is_masked(prefix: bytes) -> None:
    """In a URL, a base64 text's "+", "/" and "=" are percent-encoded."""
    secret = "~~~>>>???~~~"
    text = base64.b64encode(prefix + secret.encode() + b"!tail").decode()
    part = _secret_part(text, prefix, secret)
    assert "%" in quote(part, safe="")
    redacted = redact(f"?auth={quote(text, safe='')}&next=1", [secret])
    assert MASK in redacted and part not in unquote(redacted), redacted
    assert redacted.endswith("&next=1")


def test_short_secrets_and_short_readings() -> None:
    """A secret shorter than 4 characters is masked as written and where encoded; its
    base64 fragments (all shorter than 4) are not. A reading shorter than 4 characters
    (of a secret written with escapes) is masked only where the text was encoded."""
    assert redact("ab %61%62 &#97;&#98; a\u0062 YWI= Fi hY", ["ab"]) == (
        "*** *** *** *** YWI= Fi hY"
    )
    assert redact("AB %41%42 %2541%2542 &#65;B", ["%41%42"]) == "AB *** *** ***"


def test_overlapping_occurrences_structures_and_keys() -> None:
    assert redact("ababab", ["abab"]) == MASK
    assert redact("xabcdefx", ["abcd", "cdef"]) == f"x{MASK}x"
    value = {"key abcd": ["abcd", ("%61bcd", 1)], "n": 2, "none": None}
    assert redact(value, ["abcd"]) == {"key ***": ["***", ["***", 1]], "n": 2, "none": None}
    assert redact("nothing here", []) == "nothing here"


def test_a_long_result_is_masked_wherever_the_secrets_are() -> None:
    """256 KiB of text with escapes of its own (so all of it is decoded), the secrets in
    every hostile form here and there, and many small strings."""
    filler = "caf\\u00e9 50%25 off &amp; more + C:\\new |" * 40 + " "
    forms = [form for secret in SECRETS.values() for form in hostile_forms(secret).values()]
    parts: list[str] = []
    expected: list[str] = []
    while sum(map(len, parts)) < 256 * 1024:
        form = forms[len(parts) % len(forms)]
        parts += [filler, form, " "]
        expected += [filler, MASK, " "]
    result = {"body": "".join(parts), "items": [{"value": f"<{form}>"} for form in forms * 50]}
    redacted = redact(result, list(SECRETS.values()))
    assert redacted["body"] == "".join(expected)
    assert redacted["items"] == [{"value": f"<{MASK}>"}] * len(forms) * 50


@pytest.fixture(scope="module")
async def echo() -> AsyncIterator[EncodingEcho]:
    server = EncodingEcho()
    await server.start()
    yield server
    await server.stop()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _history_strings(history: dict[str, Any]) -> Iterator[str]:
    """Every string in a workflow's history, the payloads' (base64 JSON) decoded."""
    yield from _strings(history)
    stack: list[Any] = [history]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                decoded = base64.b64decode(node["data"]).decode("utf-8", errors="replace")
                yield decoded
                try:
                    yield from _strings(json.loads(decoded))
                except ValueError:
                    pass
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _assert_masked(texts: list[str], secret: str) -> None:
    for text in texts:
        for name, form in every_form(secret).items():
            assert form not in text, (name, text[:300])
        assert base64_core(secret) not in text


SECRET = 'Pa55 w0rd&x="q"/é€😀'


async def test_a_secret_echoed_in_every_form_is_stored_in_none(
    user: ApiUser, echo: EncodingEcho, temporal: Client
) -> None:
    """The target answers with the secret in every form, one per line: the stored execution
    and Temporal's history hold none of them, each line is masked."""
    put = await user.request("PUT", "/api/secrets/PW", json={"value": SECRET})
    assert put.status_code == 201
    body = recurring(
        f"{echo.url}/echo?q={{{{ secrets.PW | urlencode }}}}",
        interval_seconds=86400,
        config={"body": {"secret": "{{ secrets.PW }}"}},
    )
    task = await user.create_task(body)
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    handle = temporal.get_workflow_handle(started["workflow_id"])
    await handle.result()
    run = await eventually(lambda: user.execution(started["execution_id"], "succeeded"))

    assert SECRET in echo.received and f"q={quote_plus(SECRET)}" in echo.received
    lines = run["result"]["body"].splitlines()
    assert len(lines) == len(every_form(SECRET))
    for line, name in zip(lines, every_form(SECRET), strict=True):
        if "base64" in name:
            assert line.startswith(f"{name}: ") and MASK in line, line
        else:
            assert line == f"{name}: {MASK}", line
    assert any("?q=***" in entry["message"] for entry in run["logs"]), run["logs"]
    history = list(_history_strings(json.loads((await handle.fetch_history()).to_json())))
    assert any(f"as written: {MASK}" in text for text in history), "the result is in there"
    _assert_masked([*_strings(run), *history], SECRET)


async def test_a_secret_in_every_form_in_an_error_answer_is_stored_in_none(
    user: ApiUser, echo: EncodingEcho
) -> None:
    put = await user.request("PUT", "/api/secrets/PW", json={"value": SECRET})
    assert put.status_code == 201
    body = recurring(
        f"{echo.url}/fail?status=500",
        interval_seconds=86400,
        retry=fast_retry(1),
        config={"body": {"secret": "{{ secrets.PW }}"}},
    )
    task = await user.create_task(body)
    run = await user.run_to_end(task["id"])

    assert SECRET in echo.received
    assert (run["status"], run["error"]["type"]) == ("failed", "HttpStatusError")
    assert f"every byte percent-encoded: {MASK}" in run["error"]["message"]
    _assert_masked(list(_strings(run)), SECRET)


# Moved from test_templates_and_secrets.py: redaction through the webhook action.


async def test_a_target_echoing_the_secret_does_not_leak_it(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    await harness.put_secret("PASSWORD", "hunter2-but-longer")
    ok = await harness.run(
        {
            "type": "webhook",
            "config": {
                "url": f"{target.url}/ok/{key}?echo={{{{ secrets.PASSWORD }}}}",
                "method": "GET",
            },
        }
    )
    assert "hunter2-but-longer" not in ok.model_dump_json()
    failed = await failure_of(
        harness,
        {
            "type": "webhook",
            "config": {
                "url": f"{target.url}/seq/{key}x?codes=400&pw={{{{ secrets.PASSWORD }}}}",
                "method": "POST",
            },
        },
    )
    assert "hunter2-but-longer" not in str(failed) + str(failed.details)
    assert MASK in str(failed.details)


async def test_a_secret_in_a_template_error_is_redacted(harness: ActionHarness) -> None:
    await harness.put_secret("PW", SECRET)
    action = {
        "type": "webhook",
        "config": {
            "url": "http://127.0.0.1:9/",
            "method": "POST",
            "body": "{{ payload[secrets.PW] }}",
        },
    }
    failure = await failure_of(harness, action, payload={})
    assert failure.type == "TemplateError"
    text = str(failure) + json.dumps(failure.details, ensure_ascii=False)
    _assert_masked([text, *_strings(failure.details)], SECRET)
