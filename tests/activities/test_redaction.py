"""Redaction: a secret is masked in logs, results and errors as written, in its base64, and
wherever the text reads as it once each character is decoded (percent-encoding, HTML
references, backslash escapes, in any mix). Unit tests of ``redact``; a text cut short,
whose cut must leave no part of a secret; what redaction costs and keeps; then real actions
whose targets echo a secret back, through the API and Temporal."""

from __future__ import annotations

import asyncio
import base64
import gc
import html
import json
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
from temporalio.client import Client

from activities._action import ActionRun, redacted_result
from activities._failure import EXCERPT_SCAN_CHARS, ActionFailure
from activities._redaction import MASK, Redactor, redact
from activities._results import MAX_RESULT_BYTES, bounded, size_of
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
# All of them, for the tests that take one.
SECRET = 'Pa55 w0rd&x="q"/é€😀'


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


# Forms whose encoded characters are long (zeros, \u{...} unfinished at a cut, UTF-16 pairs,
# four-byte UTF-8, encodings three deep), and text around them that is encoded throughout.
LONG_FORMS: dict[str, Callable[[str], str]] = {
    "zeros": lambda secret: "".join(f"&#{'0' * 300}{ord(c)};" for c in secret),
    "zeros, hexadecimal, no ;": lambda secret: "".join(f"&#x{'0' * 200}{ord(c):x}" for c in secret),
    "\\u{zeros}": lambda secret: "".join(f"\\u{{{'0' * 300}{ord(c):x}}}" for c in secret),
    "quoted thrice": lambda secret: quote(quote(quote(secret, safe=""), safe=""), safe=""),
    "HTML-escaped thrice": lambda secret: html.escape(html.escape(html.escape(secret))),
}
FILLERS = ["plain text, ", "%41%42&#67;\\u0044\\\\%C3%A9", "\\\\\\\\%25%32%35&amp;amp;#65;"]


def _cut_cases() -> list[Any]:
    forms = {**every_form(SECRET), **{name: form(SECRET) for name, form in LONG_FORMS.items()}}
    return [
        pytest.param(form, filler, id=f"{name}-{index}")
        for name, form in forms.items()
        for index, filler in enumerate(FILLERS)
    ]


@pytest.mark.parametrize(("form", "filler"), _cut_cases())
def test_a_cut_leaves_no_part_of_a_secret_that_crosses_it(form: str, filler: str) -> None:
    """``redact_beginning`` of the text cut at any point in or around a secret's form shows
    no character of it: what it keeps is the whole text's redaction, up to a point, and
    maybe a mask at its end. (Cutting the text and redacting what is left shows a part.)"""
    before = (filler * 600)[: 700 - len(filler)]
    text = f"{before} {form} {before}"
    redactor = Redactor([SECRET])
    whole = redactor.redact(text)
    start = len(before) + 1
    assert whole.count(MASK) >= 1 and whole.startswith(redactor.redact(before))
    step = max(1, len(form) // 80)
    naive_leaks = 0
    for cut in [*range(start - 3, start + len(form) + 3, step), len(text) - 1, 600, 1000]:
        kept = redactor.redact_beginning(text[:cut])
        assert whole.startswith(kept) or (
            kept.endswith(MASK) and whole.startswith(kept[: -len(MASK)])
        ), (cut, kept[-60:])
        naive = redact(text[:cut], [SECRET])
        naive_leaks += not (whole.startswith(naive) or naive.endswith(MASK))
    assert naive_leaks, "the cuts tried cross the secret"
    # What is cut again: a few hundred characters (four rounds of decoding, and the longest
    # form, the secret's base64).
    plain = "words " * 1000
    assert len(redactor.redact_beginning(plain)) >= len(plain) - 4 * 64 - 64


def _dense_result(secret: str, size: int) -> dict[str, Any]:
    """A webhook's result whose body is ``size`` characters encoded throughout, with the
    secret in some forms every few hundred characters around where the limit cuts it."""
    forms = [every_form(secret)[name] for name in ("as written", "every byte percent-encoded")]
    forms += [LONG_FORMS["zeros"](secret), LONG_FORMS["quoted thrice"](secret)]
    filler = "\\\\%41&#66;" * 30
    around = "".join(filler + form for _ in range(40) for form in forms)
    head = filler * ((MAX_RESULT_BYTES - 60_000) // len(filler))
    body = head + around
    body += filler * ((size - len(body)) // len(filler) + 1)
    return {"status_code": 200, "headers": {"x": "y"}, "body": body, "elapsed_ms": 5}


def _kept_of(whole: str, kept: str) -> bool:
    """``kept`` is the beginning of ``whole``, maybe with a mask where it was cut."""
    return whole.startswith(kept) or (kept.endswith(MASK) and whole.startswith(kept[:-3]))


@pytest.mark.parametrize("shape", ["object", "text"])
def test_a_result_costly_to_redact_is_cut_first_and_leaves_no_part_of_a_secret(
    shape: str,
) -> None:
    """Over the limit and encoded throughout, a result is cut to the limit before it is
    redacted (its result_bytes is its size as returned): what is kept is the beginning of
    the whole result's redaction, wherever the cut went through a secret's form. (Cut,
    then redacted as if whole, it would show a part of one.)"""
    redactor = Redactor([SECRET])
    dense = _dense_result(SECRET, 600_000)
    whole = redactor.redact(dense["body"])
    naive_leaks = 0
    for offset in range(0, 8000, 1000):  # moves the cut through a round of the forms
        result: Any = {**dense, "headers": {"x": "y" * offset}}
        if shape == "text":
            result = result["body"][offset:]
        out = redacted_result(result, redactor)
        assert out["result_truncated"] is True and out["result_bytes"] == size_of(result)
        assert size_of(out) <= MAX_RESULT_BYTES
        body = out["body"] if shape == "object" else out["value"]
        expected = whole if shape == "object" else redactor.redact(result)
        assert len(body) > MAX_RESULT_BYTES // 3 and _kept_of(expected, body), offset
        if shape == "object":
            assert (out["status_code"], out["elapsed_ms"]) == (200, 5)
        naive = redactor.redact(bounded(result))
        naive_leaks += not _kept_of(expected, naive["body" if shape == "object" else "value"])
    assert naive_leaks, "the cuts tried go through a secret's form"


def test_redacting_a_result_costs_what_the_limit_keeps() -> None:
    """Decoding costs about a microsecond and a hundred bytes per encoded character: 4 MB
    of backslashes (each decoded, four rounds deep) took 2.8 s and 800 MB whole."""
    result = {"status_code": 200, "body": "\\" * 4_000_000}
    redactor = Redactor(["tok-" + "s" * 40])
    tracemalloc.start()
    try:
        redacted_result(result, redactor)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


async def test_a_big_result_is_redacted_beside_the_event_loop(harness: ActionHarness) -> None:
    await harness.put_secret("TOKEN", "tok-" + "s" * 40)

    async def huge(run: ActionRun, _config: Any) -> dict[str, Any]:
        await run.secret("TOKEN")
        return {"body": "\\" * 3_000_000}

    gaps: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            gaps.append(time.monotonic() - before)

    ticker = asyncio.create_task(tick())
    try:
        outcome = await harness.run(
            {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}}, handler=huge
        )
    finally:
        ticker.cancel()
    assert outcome.result["result_truncated"] is True
    assert max(gaps) < 0.25, max(gaps)


async def test_a_quote_cut_for_an_error_message_leaves_no_part_of_a_secret(
    harness: ActionHarness,
) -> None:
    """An error's quote is cut before it is redacted. Secrets before the cut shrink to one
    mask and whitespace collapses, so the excerpt shows what lies just before the cut."""
    token = f"tok-{uuid.uuid4().hex}"
    await harness.put_secret("TOKEN", token)
    cut = 2 * EXCERPT_SCAN_CHARS
    repeated = token * (100_000 // len(token))
    quote_text = repeated + " " * (cut - 20 - len(repeated)) + token + " and the rest"

    async def failing(run: ActionRun, _config: Any) -> None:
        await run.secret("TOKEN")
        raise ActionFailure("HttpStatusError", "HTTP 500", retryable=False, quote=quote_text)

    failure = await failure_of(
        harness, {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}}, handler=failing
    )
    assert failure.message.startswith(f"HTTP 500: {MASK}"), failure.message
    assert token[4:12] not in str(failure) + json.dumps(failure.details), failure.message


def _holders(secret: str) -> list[str]:
    """What the garbage collector's objects hold a string containing ``secret``, but
    ``secret`` itself (tuples of strings, which it does not track, looked into)."""
    gc.collect()
    found = []
    for holder in gc.get_objects():
        stack = list(gc.get_referents(holder))
        while stack:
            item = stack.pop()
            if isinstance(item, str) and secret in item and item is not secret:
                found.append(f"{type(holder).__name__}: {str(holder)[:80]}")
            elif isinstance(item, tuple | frozenset) and not gc.is_tracked(item):
                stack.extend(item)
    return found


async def test_an_attempt_leaves_no_secret_behind(harness: ActionHarness) -> None:
    """The forms of an attempt's secrets live with the attempt: no cache of the worker, nor
    ``re``'s cache of compiled patterns, keeps them once it ended."""
    secret = uuid.uuid4().hex
    await harness.put_secret("TOKEN", f"tok-{secret}")

    async def echo(run: ActionRun, _config: Any) -> dict[str, Any]:
        token = await run.secret("TOKEN")
        run.log(f"the token is {token}")
        return {"echo": token}

    outcome = await harness.run(
        {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}}, handler=echo
    )
    assert outcome.result == {"echo": MASK} and secret not in outcome.model_dump_json()
    del outcome
    assert _holders(secret) == []


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
