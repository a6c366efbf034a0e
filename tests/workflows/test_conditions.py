"""The condition evaluator: every op on JSON values, missing paths, values that do not
compare, nesting and its reasons, and ``now`` as the wall clock of a zone with DST."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter

import workflows.conditions
from schema.conditions import Condition, ConditionOp, ConditionTest
from workflows.conditions import condition_context, evaluate

CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)
PAYLOAD = {
    "amount": 50,
    "ratio": 0.5,
    "count": 1,
    "flag": True,
    "name": "Invoice 42",
    "tags": ["urgent", "billing", 3],
    "customer": {"id": 7, "vip": True, "note": None},
    "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}],
    "by_index": {"0": "zero"},
    "empty": "",
}
CONTEXT = condition_context(
    now=datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    timezone="Europe/Berlin",
    payload=PAYLOAD,
    last={"status": "succeeded", "result": {"rows": [10, 20]}},
    steps={"fetch": {"status": "failed", "output": {"code": 503}}},
)


def _check(condition: dict[str, Any], context: dict[str, Any] | None = None) -> tuple[bool, str]:
    return evaluate(CONDITION.validate_python(condition), CONTEXT if context is None else context)


def _test(path: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"path": path, "op": op, "value": value}


@pytest.mark.parametrize(
    ("test", "held", "reason"),
    [
        (_test("payload.amount", "eq", 50), True, "payload.amount is 50, eq 50"),
        (_test("payload.amount", "eq", 50.0), True, "payload.amount is 50, eq 50.0"),
        (_test("payload.amount", "eq", "50"), False, 'payload.amount is 50, not eq "50"'),
        (_test("payload.flag", "eq", 1), False, "payload.flag is true, not eq 1"),
        (_test("payload.count", "eq", True), False, "payload.count is 1, not eq true"),
        (_test("payload.flag", "eq", True), True, "payload.flag is true, eq true"),
        (_test("payload.name", "eq", "invoice 42"), False, None),
        (
            _test("payload.customer.note", "eq", None),
            True,
            "payload.customer.note is null, eq null",
        ),
        (_test("payload.customer", "eq", {"vip": True, "note": None, "id": 7.0}), True, None),
        (_test("payload.customer", "eq", {"vip": 1, "note": None, "id": 7}), False, None),
        (_test("payload.customer", "eq", {"vip": True, "id": 7}), False, None),
        (_test("payload.tags", "eq", ["urgent", "billing", 3.0]), True, None),
        (_test("payload.tags", "eq", ["billing", "urgent", 3]), False, None),
        (_test("payload.tags", "eq", ["urgent", "billing"]), False, None),
        (_test("payload.items.0", "eq", {"sku": "A1", "qty": 2}), True, None),
        (_test("payload.amount", "ne", 51), True, "payload.amount is 50, ne 51"),
        (_test("payload.amount", "ne", 50.0), False, "payload.amount is 50, not ne 50.0"),
        (_test("payload.flag", "ne", 1), True, "payload.flag is true, ne 1"),
        (_test("payload.amount", "gt", 100), False, "payload.amount is 50, not gt 100"),
        (_test("payload.amount", "gt", 49.5), True, "payload.amount is 50, gt 49.5"),
        (_test("payload.amount", "gt", 50), False, None),
        (_test("payload.amount", "gte", 50), True, "payload.amount is 50, gte 50"),
        (_test("payload.amount", "lt", 50), False, "payload.amount is 50, not lt 50"),
        (_test("payload.ratio", "lt", 1), True, "payload.ratio is 0.5, lt 1"),
        (_test("payload.amount", "lte", 50.0), True, "payload.amount is 50, lte 50.0"),
        (_test("payload.name", "lt", "J"), True, 'payload.name is "Invoice 42", lt "J"'),
        (_test("payload.name", "gt", "j"), False, None),  # by code point: "I" < "j"
        (
            _test("payload.name", "gt", 5),
            False,
            'payload.name is "Invoice 42", not gt 5 (they do not compare: two numbers or two '
            "strings do)",
        ),
        (
            _test("payload.amount", "lte", "60"),
            False,
            'payload.amount is 50, not lte "60" (they do not compare: two numbers or two '
            "strings do)",
        ),
        (_test("payload.flag", "gt", 0), False, None),
        (_test("payload.flag", "gte", 1), False, None),
        (_test("payload.customer.note", "lt", 1), False, None),
        (_test("payload.tags", "gt", 1), False, None),
        (_test("payload.amount", "in", [10, 50.0]), True, "payload.amount is 50, in [10,50.0]"),
        (_test("payload.amount", "in", ["50"]), False, 'payload.amount is 50, not in ["50"]'),
        (_test("payload.flag", "in", [1, 0]), False, None),
        (_test("payload.flag", "in", [True]), True, None),
        (_test("payload.amount", "in", []), False, "payload.amount is 50, not in []"),
        (_test("payload.items.1", "in", [{"qty": 1, "sku": "B2"}]), True, None),
        (_test("payload.amount", "not_in", [1, 2]), True, "payload.amount is 50, not_in [1,2]"),
        (_test("payload.amount", "not_in", [50]), False, "payload.amount is 50, not not_in [50]"),
        (_test("payload.count", "not_in", [True]), True, None),
        (
            _test("payload.name", "contains", "voice"),
            True,
            'payload.name is "Invoice 42", contains "voice"',
        ),
        (_test("payload.name", "contains", "VOICE"), False, None),
        (_test("payload.name", "contains", 4), False, None),
        (_test("payload.name", "contains", ""), True, None),
        (
            _test("payload.tags", "contains", "billing"),
            True,
            'payload.tags is ["urgent","billing",3], contains "billing"',
        ),
        (_test("payload.tags", "contains", 3.0), True, None),
        (_test("payload.tags", "contains", "bill"), False, None),
        (
            _test("payload.customer", "contains", "vip"),
            True,
            'payload.customer is {"id":7,"vip":true,"note":null}, contains "vip"',
        ),
        (_test("payload.customer", "contains", "name"), False, None),
        (_test("payload.customer", "contains", 7), False, None),
        (_test("payload.amount", "contains", 5), False, "payload.amount is 50, not contains 5"),
        (
            _test("payload.name", "matches", r"^Invoice \d+$"),
            True,
            r'payload.name is "Invoice 42", matches "^Invoice \\d+$"',
        ),
        (_test("payload.name", "matches", "invoice"), False, None),
        (_test("payload.name", "matches", "(?i)invoice"), True, None),
        (_test("payload.name", "matches", "4"), True, None),  # search, not a full match
        (_test("payload.amount", "matches", "5"), False, 'payload.amount is 50, not matches "5"'),
        (_test("payload.empty", "matches", "^$"), True, None),
    ],
)
def test_ops_on_json_values(test: dict[str, Any], held: bool, reason: str | None) -> None:
    result = _check(test)
    assert result[0] is held
    if reason is not None:
        assert result[1] == reason


@pytest.mark.parametrize(
    "path",
    [
        "payload.nope",
        "payload.name.first",  # into a string
        "payload.amount.0",  # into a number
        "payload.customer.note.x",  # into null
        "payload.items.2.sku",  # out of range
        "payload.items.sku",  # a key on a list
        "payload.customer.0",  # an index on an object without the key "0"
    ],
)
def test_a_missing_path_fails_every_test_but_exists_false(path: str) -> None:
    for op, value in [
        ("eq", None),
        ("ne", 1),
        ("gt", 0),
        ("gte", 0),
        ("lt", 0),
        ("lte", 0),
        ("in", [None]),
        ("not_in", [1]),
        ("contains", "x"),
        ("matches", ""),
        ("exists", True),
        ("exists", None),
    ]:
        assert _check(_test(path, op, value)) == (False, f"{path} is missing"), op
    assert _check(_test(path, "exists", False)) == (True, f"{path} is missing")


def test_exists_finds_values_null_included() -> None:
    assert _check(_test("payload.customer.note", "exists")) == (
        True,
        "payload.customer.note exists",
    )
    assert _check(_test("payload.items.1.qty", "exists", True)) == (
        True,
        "payload.items.1.qty exists",
    )
    assert _check(_test("payload.customer", "exists", False)) == (False, "payload.customer exists")


def test_an_integer_segment_indexes_a_list_and_is_a_key_on_an_object() -> None:
    assert _check(_test("payload.items.1.sku", "eq", "B2")) == (
        True,
        'payload.items.1.sku is "B2", eq "B2"',
    )
    assert _check(_test("payload.by_index.0", "eq", "zero"))[0] is True


def test_matches_reads_the_first_10000_characters() -> None:
    context = {**CONTEXT, "payload": {"text": "x" * 9_994 + "needle"}}
    assert _check(_test("payload.text", "matches", "needle"), context)[0] is True
    context = {**CONTEXT, "payload": {"text": "x" * 9_995 + "needle"}}
    assert _check(_test("payload.text", "matches", "needl$"), context)[0] is True  # $ at the cut
    held, reason = _check(_test("payload.text", "matches", "needle"), context)
    assert held is False
    assert reason == 'payload.text is "' + "x" * 58 + '…, not matches "needle"'


def test_values_that_skipped_validation_are_false_not_errors() -> None:
    unchecked: list[tuple[ConditionOp, Any]] = [
        ("matches", "(unclosed"),
        ("in", 50),
        ("not_in", "x"),
        ("gt", None),
    ]
    for op, value in unchecked:
        test = ConditionTest.model_construct(path="payload.amount", op=op, value=value)
        assert evaluate(test, CONTEXT)[0] is False, op
    odd = {**CONTEXT, "payload": {"set": {1, 2}, "tuple": (1, 2)}}
    assert _check(_test("payload.set", "eq", [1, 2]), odd)[0] is False
    assert _check(_test("payload.set", "contains", 1), odd) == (
        False,
        "payload.set is set, not contains 1",
    )
    assert _check(_test("payload.tuple.0", "exists"), odd)[0] is False


def test_deep_payloads_compare_without_exhausting_the_stack() -> None:
    deep: list[Any] = []
    other: list[Any] = []
    for _ in range(5_000):
        deep, other = [deep], [other]
    context = {**CONTEXT, "payload": {"deep": deep, "other": other}}
    assert _check(_test("payload.deep", "eq", other), context) == (
        True,
        "payload.deep is [[[…]]], eq [[[…]]]",
    )
    other_context = {**CONTEXT, "payload": {"deep": deep, "other": [other, 1]}}
    assert _check(_test("payload.deep", "in", [[other, 1]]), other_context)[0] is False


def test_reasons_show_long_values_cut() -> None:
    context = {**CONTEXT, "payload": {"n": list(range(8)), "s": 'a "quoted"\nline'}}
    assert _check(_test("payload.n", "contains", 9), context) == (
        False,
        "payload.n is [0,1,2,3,4,…], not contains 9",
    )
    assert _check(_test("payload.s", "eq", "x"), context) == (
        False,
        'payload.s is "a \\"quoted\\"\\nline", not eq "x"',
    )


def test_last_and_steps() -> None:
    assert _check(_test("last.status", "eq", "succeeded")) == (
        True,
        'last.status is "succeeded", eq "succeeded"',
    )
    assert _check(_test("last.result.rows.1", "gte", 20))[0] is True
    assert _check(_test("steps.fetch.status", "ne", "succeeded"))[0] is True
    assert _check(_test("steps.fetch.output.code", "eq", 503))[0] is True
    assert _check(_test("steps.parse.status", "exists")) == (False, "steps.parse.status is missing")
    first_run = condition_context(
        now=datetime(2026, 1, 1, tzinfo=UTC), timezone="UTC", payload=None, last=None, steps=None
    )
    assert _check(_test("last.status", "ne", "failed"), first_run) == (
        False,
        "last.status is missing",
    )
    assert _check(_test("steps.fetch.status", "exists", False), first_run)[0] is True
    # A run without a payload has a null one.
    assert _check(_test("payload", "eq", None), first_run) == (True, "payload is null, eq null")
    assert _check(_test("payload", "exists"), first_run)[0] is True
    assert _check(_test("payload.amount", "exists"), first_run)[0] is False


GT_100 = _test("payload.amount", "gt", 100)
EQ_50 = _test("payload.amount", "eq", 50)
MONDAY = _test("now.weekday", "eq", "monday")


@pytest.mark.parametrize(
    ("condition", "held", "reason"),
    [
        ({"all": [EQ_50, EQ_50, EQ_50]}, True, "all of 3 held"),
        (
            {"all": [EQ_50, GT_100, MONDAY]},
            False,
            "not all of 3 held: payload.amount is 50, not gt 100",
        ),
        ({"any": [GT_100, EQ_50]}, True, "any of 2 held: payload.amount is 50, eq 50"),
        ({"any": [EQ_50, GT_100]}, True, "any of 2 held: payload.amount is 50, eq 50"),
        (
            {"any": [GT_100, MONDAY]},
            False,
            "none of 2 held, first: payload.amount is 50, not gt 100",
        ),
        ({"not": GT_100}, True, "not (payload.amount is 50, not gt 100)"),
        ({"not": EQ_50}, False, "not (payload.amount is 50, eq 50)"),
        ({"not": {"not": EQ_50}}, True, "not (not (payload.amount is 50, eq 50))"),
        (
            {"all": [EQ_50, {"not": {"any": [GT_100, {"all": [EQ_50, MONDAY]}]}}]},
            True,
            "all of 2 held",
        ),
        (
            {"all": [EQ_50, {"any": [GT_100, {"all": [EQ_50, MONDAY]}]}]},
            False,
            "not all of 2 held: none of 2 held, first: payload.amount is 50, not gt 100",
        ),
        (
            {"any": [GT_100, {"not": {"all": [EQ_50, MONDAY]}}]},
            True,
            'any of 2 held: not (not all of 2 held: now.weekday is "sunday", not eq "monday")',
        ),
    ],
)
def test_nesting_and_its_reasons(condition: dict[str, Any], held: bool, reason: str) -> None:
    assert _check(condition) == (held, reason)


def test_now_is_the_wall_clock_of_the_zone_across_dst() -> None:
    def now(instant: datetime, zone: str) -> Any:
        return condition_context(now=instant, timezone=zone, payload=None, last=None, steps=None)[
            "now"
        ]

    berlin = "Europe/Berlin"  # clocks jump from 02:00 to 03:00 on 2026-03-29
    assert now(datetime(2026, 3, 29, 0, 59, tzinfo=UTC), berlin) == {
        "weekday": "sunday",
        "hour": 1,
        "minute": 59,
        "date": "2026-03-29",
    }
    assert now(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), berlin) == {
        "weekday": "sunday",
        "hour": 3,
        "minute": 0,
        "date": "2026-03-29",
    }
    new_york = "America/New_York"  # 01:00-02:00 happens twice on 2026-11-01
    assert now(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), new_york)["hour"] == 1
    assert now(datetime(2026, 11, 1, 6, 30, tzinfo=UTC), new_york)["hour"] == 1
    assert now(datetime(2026, 11, 1, 3, 30, tzinfo=UTC), new_york) == {
        "weekday": "saturday",
        "hour": 23,
        "minute": 30,
        "date": "2026-10-31",
    }
    tokyo_noon = datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert now(tokyo_noon, "UTC") == {
        "weekday": "monday",
        "hour": 3,
        "minute": 0,
        "date": "2026-06-01",
    }


def test_now_in_conditions() -> None:
    assert _check(_test("now.hour", "eq", 3)) == (True, "now.hour is 3, eq 3")
    assert _check(_test("now.weekday", "in", ["saturday", "sunday"]))[0] is True
    assert _check(_test("now.date", "gte", "2026-03-29"))[0] is True
    assert _check(_test("now.date", "gt", "2026-03-29"))[0] is False
    assert _check(_test("now.minute", "lt", 15))[0] is True


def test_the_context_holds_what_it_was_given() -> None:
    context = condition_context(
        now=datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
        timezone="UTC",
        payload=[1],
        last={"status": "failed", "result": None},
        steps=None,
    )
    assert context == {
        "payload": [1],
        "now": {"weekday": "monday", "hour": 12, "minute": 0, "date": "2026-06-01"},
        "last": {"status": "failed", "result": None},
    }


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must carry its offset"):
        condition_context(
            now=datetime(2026, 6, 1, 12, 0), timezone="UTC", payload=None, last=None, steps=None
        )


def test_the_evaluator_imports_only_what_the_workflow_sandbox_allows() -> None:
    tree = ast.parse(Path(workflows.conditions.__file__).read_text())
    imported = set()
    for node in tree.body:  # top level only: the TYPE_CHECKING block is not run
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "re2", "typing", "zoneinfo", "schema.conditions"}


def test_a_pattern_that_backtracks_in_python_is_linear_here() -> None:
    """`(a+)+$` takes Python's `re` days on 40 characters; RE2 answers at once, so a
    payload cannot stall the worker (pytest-timeout would fail a hang)."""
    condition = ConditionTest(path="payload.text", op="matches", value="(a+)+$")
    held, _ = evaluate(condition, {"payload": {"text": "a" * 9_999 + "b"}})
    assert held is False
    held, _ = evaluate(condition, {"payload": {"text": "b" + "a" * 9_999}})
    assert held is True
