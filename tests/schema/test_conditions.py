"""The condition schema refuses, at the place it is written, every condition that could never
evaluate, and ``{"not": ...}`` reads back from every dump of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from schema.actions import StrictModel
from schema.conditions import (
    Condition,
    ConditionAll,
    ConditionNot,
    ConditionOp,
    ConditionTest,
    condition_paths,
    condition_tests,
    measure,
    refuse_steps,
    steps_referenced,
)

TEST = {"path": "payload.a", "op": "exists"}
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


class Holder(StrictModel):
    """A condition where TaskSpec will hold one."""

    condition: Condition | None = None


def _errors(condition: Any) -> list[tuple[tuple[int | str, ...], str, str]]:
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"condition": condition})
    return [(error["loc"], error["type"], error["msg"]) for error in caught.value.errors()]


def _nested(levels: int) -> dict[str, Any]:
    """A test under ``levels - 1`` nots: a condition ``levels`` deep."""
    condition: dict[str, Any] = dict(TEST)
    for _ in range(levels - 1):
        condition = {"not": condition}
    return condition


SEGMENTS = (
    "segment {}: a segment is an identifier (letters, digits, _) or a list index (0, 1, ...), "
)
SEGMENTS += "joined by dots"
NOW = "now is followed by exactly one of weekday, hour, minute, date"
LAST = "last is followed by status, or result and the path inside it"
STEPS = "steps is followed by a step id, then status, or output and the path inside it"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("payload..a", SEGMENTS.format("2 is empty")),
        ("payload.", SEGMENTS.format("2 is empty")),
        ("payload.order-id", SEGMENTS.format("2 is 'order-id'")),
        ("payload.items.01", SEGMENTS.format("3 is '01'")),
        ("payload.items.-1", SEGMENTS.format("3 is '-1'")),
        ("payload.a b", SEGMENTS.format("2 is 'a b'")),
        ("payload.größe", SEGMENTS.format("2 is 'größe'")),
        (".".join(["payload"] + ["a"] * 20), "has 21 segments; a path has at most 20"),
        ("event.amount", "starts with 'event'; a path starts with payload, last, now or steps"),
        ("Payload.amount", "starts with 'Payload'; a path starts with payload, last, now or steps"),
        ("now", NOW),
        ("now.second", NOW),
        ("now.hour.0", NOW),
        ("last", LAST),
        ("last.started_at", LAST),
        ("last.status.code", LAST),
        ("steps", STEPS),
        ("steps.fetch", STEPS),
        ("steps.fetch.result", STEPS),
        ("steps.fetch.status.code", STEPS),
        ("steps.output.rows", STEPS),
    ],
)
def test_a_path_that_no_context_has_is_refused_at_its_test(path: str, message: str) -> None:
    condition = {"all": [TEST, {"not": {"path": path, "op": "exists"}}]}
    assert _errors(condition) == [
        (("condition", "all", 1, "not", "path"), "value_error", f"Value error, {message}")
    ]


def test_a_path_is_1_to_200_characters() -> None:
    longest = "payload." + "a" * 192
    assert CONDITION.validate_python({"path": longest, "op": "exists"}) == ConditionTest(
        path=longest, op="exists"
    )
    assert _errors({"path": longest + "b", "op": "exists"}) == [
        (("condition", "path"), "string_too_long", "String should have at most 200 characters")
    ]
    assert _errors({"path": "", "op": "exists"}) == [
        (("condition", "path"), "string_too_short", "String should have at least 1 character")
    ]


@pytest.mark.parametrize(
    "path",
    [
        "payload",
        "payload.items.0.sku",
        "payload._private.x9",
        "payload.items.10",
        "last.status",
        "last.result",
        "last.result.rows.3",
        "now.weekday",
        "now.hour",
        "now.minute",
        "now.date",
        "steps.fetch.status",
        "steps.fetch.output",
        "steps.fetch.output.body.0.id",
        "steps.0.output",
        ".".join(["payload"] + ["a"] * 19),
    ],
)
def test_paths_each_root_offers_are_accepted(path: str) -> None:
    assert CONDITION.validate_python({"path": path, "op": "exists"}) == ConditionTest(
        path=path, op="exists"
    )


def test_an_unknown_op_is_located_and_its_value_is_not_judged() -> None:
    condition = {"all": [TEST, {"path": "payload.a", "op": "between", "value": 5}]}
    expected = (
        "Input should be 'eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'in', 'not_in', 'contains', "
        "'matches' or 'exists'"
    )
    assert _errors(condition) == [(("condition", "all", 1, "op"), "literal_error", expected)]


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("in", 3, "in needs a list of values"),
        ("in", None, "in needs a list of values"),
        ("not_in", "abc", "not_in needs a list of values"),
        ("matches", 5, "matches needs a regular expression, as a string"),
        ("matches", None, "matches needs a regular expression, as a string"),
        ("matches", "a" * 501, "a pattern has at most 500 characters, not 501"),
        (
            "matches",
            "(unclosed",
            "is not a pattern RE2 accepts (no backreferences or lookaround): missing ): (unclosed",
        ),
        (
            "matches",
            "(a)\\1",
            "is not a pattern RE2 accepts (no backreferences or lookaround): "
            "invalid escape sequence: \\1",
        ),
        ("exists", "yes", "exists takes true, false, or null (meaning true)"),
        ("exists", 1, "exists takes true, false, or null (meaning true)"),
        ("gt", True, "gt needs a number or a string"),
        ("gte", None, "gte needs a number or a string"),
        ("lt", [1], "lt needs a number or a string"),
        ("lte", {"a": 1}, "lte needs a number or a string"),
        ("gt", float("nan"), "gt needs a finite number"),
        ("lt", float("inf"), "lt needs a finite number"),
    ],
)
def test_a_value_that_does_not_suit_its_op_is_located(op: str, value: Any, message: str) -> None:
    condition = {"any": [TEST, TEST, {"path": "payload.a", "op": op, "value": value}]}
    assert _errors(condition) == [
        (("condition", "any", 2, "value"), "value_error", f"Value error, {message}")
    ]


def test_a_missing_value_is_judged_like_null() -> None:
    assert _errors({"path": "payload.a", "op": "not_in"}) == [
        (("condition", "value"), "value_error", "Value error, not_in needs a list of values")
    ]


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", None),
        ("eq", {"a": [1, 2]}),
        ("ne", "x"),
        ("gt", 1),
        ("gte", 1.5),
        ("lt", "2026-01-01"),
        ("lte", -3),
        ("in", []),
        ("not_in", [1, "a", None]),
        ("contains", "x"),
        ("contains", 3),
        ("matches", "^Invoice \\d+$"),
        ("matches", "a" * 500),
        ("exists", None),
        ("exists", True),
        ("exists", False),
    ],
)
def test_values_that_suit_their_op_are_accepted(op: ConditionOp, value: Any) -> None:
    test = CONDITION.validate_python({"path": "payload.a", "op": op, "value": value})
    assert test == ConditionTest(path="payload.a", op=op, value=value)


@pytest.mark.parametrize(
    ("condition", "errors"),
    [
        ({}, [(("condition",), "condition_shape")]),
        ("payload.a > 1", [(("condition",), "condition_shape")]),
        ([TEST], [(("condition",), "condition_shape")]),
        ({"value": 1}, [(("condition",), "condition_shape")]),
        ({"not": 5}, [(("condition", "not"), "condition_shape")]),
        ({"all": [TEST, {"nope": 1}]}, [(("condition", "all", 1), "condition_shape")]),
        ({"op": "eq", "value": 1}, [(("condition", "path"), "missing")]),
        ({"path": "payload.a"}, [(("condition", "op"), "missing")]),
        ({**TEST, "note": "x"}, [(("condition", "note"), "extra_forbidden")]),
        ({"all": [TEST], "any": [TEST]}, [(("condition", "any"), "extra_forbidden")]),
        ({"not": TEST, "path": "payload.a"}, [(("condition", "path"), "extra_forbidden")]),
        ({"all": []}, [(("condition", "all"), "too_short")]),
        ({"any": [TEST] * 51}, [(("condition", "any"), "too_long")]),
        ({"all": TEST}, [(("condition", "all"), "list_type")]),
        (
            {"all": [{"path": "x", "op": "eq"}, {"any": [{"path": "payload.a", "op": "?"}]}]},
            [
                (("condition", "all", 0, "path"), "value_error"),
                (("condition", "all", 1, "any", 0, "op"), "literal_error"),
            ],
        ),
    ],
)
def test_shapes_are_located_the_way_the_json_reads(
    condition: Any, errors: list[tuple[tuple[int | str, ...], str]]
) -> None:
    assert [(loc, kind) for loc, kind, _ in _errors(condition)] == errors


def test_a_condition_that_is_no_shape_says_what_a_condition_is() -> None:
    message = (
        'a condition is an object with "all", "any" or "not", or a test with "path", "op" '
        'and "value"'
    )
    assert _errors({"when": "always"}) == [(("condition",), "condition_shape", message)]


def test_nesting_is_at_most_10_levels() -> None:
    assert measure(CONDITION.validate_python(_nested(10))) == (10, 1)
    message = "Value error, nests 11 levels deep; a condition nests at most 10"
    assert _errors(_nested(11)) == [(("condition",), "value_error", message)]
    # Refused where it first becomes too deep: 11 levels above its deepest test.
    assert _errors({"all": [TEST, _nested(12)]}) == [
        (("condition", "all", 1, "not"), "value_error", message)
    ]


def test_a_condition_holds_at_most_100_tests() -> None:
    fifty = {"all": [TEST] * 50}
    assert measure(CONDITION.validate_python({"any": [fifty, fifty]})) == (3, 100)
    assert _errors({"any": [fifty, fifty, TEST]}) == [
        (
            ("condition",),
            "value_error",
            "Value error, holds 101 tests; a condition holds at most 100",
        )
    ]


def test_not_reads_back_from_every_dump() -> None:
    holder = Holder.model_validate({"condition": {"not": {"any": [TEST, {"not": TEST}]}}})
    condition = holder.condition
    assert isinstance(condition, ConditionNot)
    sent = {"not": {"any": [{**TEST, "value": None}, {"not": {**TEST, "value": None}}]}}
    assert holder.model_dump() == {"condition": sent}
    assert holder.model_dump(mode="json") == {"condition": sent}
    assert holder.model_dump(by_alias=True, mode="json") == {"condition": sent}
    assert json.loads(holder.model_dump_json()) == {"condition": sent}
    for dump in (
        holder.model_dump(),
        holder.model_dump(mode="json"),
        holder.model_dump(by_alias=False),  # by field name: {"not_": ...}
    ):
        assert Holder.model_validate(dump) == holder
    by_name = {"not_": {"any": [{**TEST, "value": None}, {"not_": {**TEST, "value": None}}]}}
    assert holder.model_dump(by_alias=False) == {"condition": by_name}
    assert Holder.model_validate_json(holder.model_dump_json()) == holder
    assert CONDITION.validate_python(condition) is condition


def test_not_travels_through_temporal_payloads() -> None:
    holder = Holder(condition=ConditionNot(not_=ConditionTest(path="last.status", op="exists")))
    converter = pydantic_data_converter.payload_converter
    payloads = converter.to_payloads([holder])
    assert json.loads(payloads[0].data) == {
        "condition": {"not": {"path": "last.status", "op": "exists", "value": None}}
    }
    assert converter.from_payloads(payloads, [Holder]) == [holder]


def test_the_json_schema_names_the_key_not() -> None:
    schema = Holder.model_json_schema()
    assert schema["$defs"]["ConditionNot"]["required"] == ["not"]
    assert list(schema["$defs"]["ConditionNot"]["properties"]) == ["not"]


def test_paths_and_steps_are_listed_in_order_each_once() -> None:
    condition = CONDITION.validate_python(
        {
            "all": [
                {"path": "steps.fetch.status", "op": "eq", "value": "succeeded"},
                {"not": {"path": "last.status", "op": "eq", "value": "failed"}},
                {
                    "any": [
                        {"path": "steps.parse.output.rows.0", "op": "exists"},
                        {"path": "steps.fetch.status", "op": "ne", "value": "failed"},
                        {"path": "payload.amount", "op": "gt", "value": 100},
                    ]
                },
            ]
        }
    )
    assert condition_paths(condition) == [
        "steps.fetch.status",
        "last.status",
        "steps.parse.output.rows.0",
        "payload.amount",
    ]
    assert steps_referenced(condition) == {"fetch", "parse"}
    assert [loc for loc, _ in condition_tests(condition, ("condition",))] == [
        ("condition", "all", 0),
        ("condition", "all", 1, "not"),
        ("condition", "all", 2, "any", 0),
        ("condition", "all", 2, "any", 1),
        ("condition", "all", 2, "any", 2),
    ]
    assert steps_referenced(CONDITION.validate_python(TEST)) == set()


def test_steps_are_refused_outside_a_chain_and_unknown_ids_inside() -> None:
    condition = CONDITION.validate_python(
        {
            "any": [
                {"path": "payload.a", "op": "exists"},
                {"not": {"path": "steps.fetch.status", "op": "eq", "value": "failed"}},
                {"path": "steps.parse.output", "op": "exists"},
            ]
        }
    )
    outside = "steps paths are only for the steps of a chain"
    assert refuse_steps(condition) == [
        (("condition", "any", 1, "not", "path"), outside, "steps.fetch.status"),
        (("condition", "any", 2, "path"), outside, "steps.parse.output"),
    ]
    assert refuse_steps(condition, ("steps", 2, "condition"), available=["fetch"]) == [
        (
            ("steps", 2, "condition", "any", 2, "path"),
            "no earlier step has the id 'parse' (earlier steps: fetch)",
            "steps.parse.output",
        )
    ]
    assert refuse_steps(condition, available={"fetch", "parse"}) == []
    first = "no earlier step has the id 'fetch' (earlier steps: none)"
    assert refuse_steps(condition, available=[])[0][1] == first
    assert refuse_steps(ConditionAll(all=[ConditionTest(path="now.hour", op="exists")])) == []
