"""One size limit on what an action returns, applied by the runtime after redaction: a result
over MAX_RESULT_BYTES as JSON is cut to fit, keeps its small members whole and the beginning
of its big ones, and says so (``result_truncated``, ``result_bytes``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from activities._action import ActionRun
from activities._results import MAX_RESULT_BYTES, bounded, size_of
from tests.fixtures.actions import ActionHarness
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.fake_google import FakeGoogle


def test_a_result_within_the_limit_is_untouched() -> None:
    result = {"status_code": 200, "body": "x" * (MAX_RESULT_BYTES - 100)}
    assert bounded(result) is result


def test_a_result_over_the_limit_is_cut_and_says_so() -> None:
    result = {
        "status_code": 200,
        "headers": {"content-type": "text/plain"},
        "body": "x" * 1_000_000,
        "elapsed_ms": 12,
    }
    cut = bounded(result)
    assert size_of(cut) <= MAX_RESULT_BYTES
    assert cut["result_truncated"] is True and cut["result_bytes"] == size_of(result)
    assert {k: cut[k] for k in ("status_code", "headers", "elapsed_ms")} == {
        "status_code": 200,
        "headers": {"content-type": "text/plain"},
        "elapsed_ms": 12,
    }
    assert cut["body"] == "x" * len(cut["body"]) and len(cut["body"]) > MAX_RESULT_BYTES - 1024
    assert list(cut) == [*result, "result_truncated", "result_bytes"]


def test_lists_keep_their_first_items_and_text_its_beginning() -> None:
    rows = [[f"row {n}", "é" * 100, '\u0000"quoted"'] for n in range(10_000)]
    cut = bounded({"range": "A1:C10000", "values": rows})
    assert size_of(cut) <= MAX_RESULT_BYTES
    kept = cut["values"]
    assert 100 < len(kept) < len(rows) and kept[:-1] == rows[: len(kept) - 1]
    assert cut["range"] == "A1:C10000"
    # Escapes and multi-byte characters count as what they weigh in JSON.
    text = bounded('é"' * 300_000)
    assert size_of(text) <= MAX_RESULT_BYTES and text["result_truncated"] is True
    assert set(text["value"]) <= {"é", '"'} and text["value"].startswith('é"é"')


def test_a_result_of_many_big_members_keeps_what_fits_in_order() -> None:
    result = {f"part{n}": "y" * 100_000 for n in range(5)}
    cut = bounded({"id": "abc", **result})
    assert size_of(cut) <= MAX_RESULT_BYTES and cut["id"] == "abc"
    assert cut["part0"] == result["part0"] and cut["part1"] == result["part1"]
    assert 0 < len(cut["part2"]) < 100_000 and "part4" not in cut


async def test_the_runtime_bounds_every_result_after_redaction(harness: ActionHarness) -> None:
    await harness.put_secret("TOKEN", "tok-" + "s" * 40)

    async def huge(run: ActionRun, _config: Any) -> dict[str, Any]:
        token = await run.secret("TOKEN")
        return {"ok": True, "echo": (token + " ") * 100_000}

    outcome = await harness.run(
        {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}}, handler=huge
    )
    result = outcome.result
    assert result["ok"] is True and result["result_truncated"] is True
    assert size_of(result) <= MAX_RESULT_BYTES
    # Measured and cut after redaction: the full size is that of the redacted result.
    assert result["result_bytes"] == size_of({"ok": True, "echo": "*** " * 100_000})
    assert "tok-" not in json.dumps(result) and result["echo"].startswith("*** *** ")
    assert any("result_truncated" in entry.message for entry in outcome.logs)


async def test_a_report_over_the_limit_keeps_its_metadata(
    harness: ActionHarness, claude_peer: FakeAnthropic
) -> None:
    # The fake answers with the prompt, which holds the sources: about 300 KB of report.
    words = [f"{uuid.uuid4().hex}{'w' * 29_000}" for _ in range(10)]
    report = {
        "type": "generate_report",
        "config": {
            "title": "Big",
            "instructions": "Everything.",
            "sources": [{"kind": "text", "text": word} for word in words],
        },
    }
    outcome = await harness.run(
        report, anthropic_api_key=claude_peer.api_key, anthropic_base_url=claude_peer.url
    )
    result = outcome.result
    assert result["result_truncated"] is True and result["result_bytes"] > MAX_RESULT_BYTES
    assert size_of(result) <= MAX_RESULT_BYTES
    assert (result["title"], result["format"]) == ("Big", "markdown")
    assert result["usage"]["output_tokens"] > 0 and len(result["sources_used"]) == 10
    assert result["content"].startswith("Echo: # Big") and words[0] in result["content"]
    assert words[-1] not in result["content"]


async def test_google_rows_over_the_limit_keep_the_first_rows(
    harness: ActionHarness, google_peer: FakeGoogle
) -> None:
    sheet = f"s-{uuid.uuid4().hex}"
    rows = [[n, f"name {n}", "v" * 100] for n in range(5_000)]
    google_peer.sheets[sheet, "Data"] = rows
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google_peer.STATIC_TOKEN}))
    outcome = await harness.run(
        {
            "type": "google_workspace",
            "config": {
                "service": "sheets",
                "operation": "read_range",
                "credentials_secret": "GOOGLE",
                "params": {"spreadsheet_id": sheet, "range": "Data!A1:C5000"},
            },
        },
        google_api_base_url=google_peer.url,
        google_token_url=google_peer.token_url,
    )
    result = outcome.result
    assert result["result_truncated"] is True and size_of(result) <= MAX_RESULT_BYTES
    assert result["range"] == "Data!A1:C5000"
    kept = result["values"]
    assert 1_000 < len(kept) < 5_000 and kept[:-1] == rows[: len(kept) - 1]
