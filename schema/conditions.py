"""Task conditions: a small JSON language, checked here, evaluated by ``workflows.conditions``.

A condition is ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": ...}`` or a test
``{"path": "payload.amount", "op": "gt", "value": 100}``. A path is dot-separated segments
(identifiers, or list indexes such as ``payload.items.0.sku``) under one of four roots:
``payload`` (the trigger's payload), ``last`` (``last.status``, ``last.result...``: the
previous execution), ``now`` (``now.weekday``, ``now.hour``, ``now.minute``, ``now.date``, in
the task's time zone) and ``steps`` (``steps.<id>.output...``, ``steps.<id>.status``: only in
a chain). Everything that could never evaluate is refused here, with its location: a path
no context has, an operator without the value it needs, a pattern ``re`` cannot compile, a
condition nested deeper than ``MAX_DEPTH`` or holding more than ``MAX_TESTS`` tests.

The member of the union is picked by the key present (``all``, ``any``, ``not``, else a
test), and errors are located without the union's tags: ``("all", 1, "op")``, the way a
user reads the JSON they sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Literal

import re2  # type: ignore[import-untyped]
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from schema.actions import StrictModel

MAX_DEPTH = 10
MAX_TESTS = 100
MAX_ITEMS = 50
MAX_PATH_LENGTH = 200
MAX_SEGMENTS = 20
MAX_PATTERN_LENGTH = 500
ROOTS = ("payload", "last", "now", "steps")
NOW_FIELDS = ("weekday", "hour", "minute", "date")
# An identifier (a key) or a list index without leading zeros.
SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|0|[1-9][0-9]*")

ConditionOp = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "matches", "exists"
]
ORDER_OPS = ("gt", "gte", "lt", "lte")
LIST_OPS = ("in", "not_in")

# (location, message, input): the problems ``schema.tasks.invalid`` turns into an error.
Problem = tuple[tuple[str | int, ...], str, Any]


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be evaluated, or None when it can."""
    segments = path.split(".")
    if len(segments) > MAX_SEGMENTS:
        return f"has {len(segments)} segments; a path has at most {MAX_SEGMENTS}"
    for position, segment in enumerate(segments, start=1):
        if not SEGMENT.fullmatch(segment):
            shown = "empty" if not segment else repr(segment)
            return (
                f"segment {position} is {shown}: a segment is an identifier (letters, digits, _) "
                "or a list index (0, 1, ...), joined by dots"
            )
    root, rest = segments[0], segments[1:]
    if root not in ROOTS:
        return f"starts with {root!r}; a path starts with payload, last, now or steps"
    if root == "now" and (len(rest) != 1 or rest[0] not in NOW_FIELDS):
        return "now is followed by exactly one of weekday, hour, minute, date"
    if root == "last" and not (rest == ["status"] or rest[:1] == ["result"]):
        return "last is followed by status, or result and the path inside it"
    if root == "steps" and not (
        len(rest) == 2 and rest[1] == "status" or len(rest) >= 2 and rest[1] == "output"
    ):
        return "steps is followed by a step id, then status, or output and the path inside it"
    return None


def compile_pattern(pattern: str) -> Any:
    """A ``matches`` pattern, compiled by RE2: linear time in the text, whatever the
    pattern, so a condition cannot stall the worker (Python's ``re`` can backtrack for
    days on ``(a+)+$``). Raises ``re2.error``."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _value_problem(op: str, value: Any) -> str | None:
    """Why ``value`` does not suit ``op``, or None when it does."""
    if op in LIST_OPS and not isinstance(value, list):
        return f"{op} needs a list of values"
    if op in ORDER_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return f"{op} needs a number or a string"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{op} needs a finite number"
    if op == "matches":
        if not isinstance(value, str):
            return "matches needs a regular expression, as a string"
        if len(value) > MAX_PATTERN_LENGTH:
            return f"a pattern has at most {MAX_PATTERN_LENGTH} characters, not {len(value)}"
        try:
            compile_pattern(value)
        except re2.error as error:
            detail = error.args[0] if error.args else error
            reason = detail.decode() if isinstance(detail, bytes) else str(detail)
            return f"is not a pattern RE2 accepts (no backreferences or lookaround): {reason}"
    if op == "exists" and value is not None and not isinstance(value, bool):
        return "exists takes true, false, or null (meaning true)"
    return None


class ConditionTest(StrictModel):
    """One test of a value of the context: ``{"path": ..., "op": ..., "value": ...}``."""

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="payload..., last.status, last.result..., now.weekday|hour|minute|date, "
        "steps.<id>.status, steps.<id>.output...; integer segments index lists.",
    )
    op: ConditionOp
    value: Any = Field(
        None,
        validate_default=True,
        description="in/not_in: a list; matches: a regex; gt/gte/lt/lte: a number or string; "
        "exists: a boolean (null means true).",
    )

    @field_validator("path")
    @classmethod
    def _evaluable_path(cls, value: str) -> str:
        problem = path_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("value")
    @classmethod
    def _value_of_op(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")  # absent when op itself was refused
        problem = _value_problem(op, value) if isinstance(op, str) else None
        if problem:
            raise ValueError(problem)
        return value


class ConditionAll(StrictModel):
    """Holds when every condition holds."""

    all: list[Condition] = Field(min_length=1, max_length=MAX_ITEMS)


class ConditionAny(StrictModel):
    """Holds when at least one condition holds."""

    any: list[Condition] = Field(min_length=1, max_length=MAX_ITEMS)


class ConditionNot(StrictModel):
    """Holds when its condition does not; written ``{"not": ...}``."""

    # Dumped as "not" by every serializer (the spec hash, the database, Temporal's payloads);
    # "not_" is read too, so that a dump by field name validates.
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    not_: Condition = Field(alias="not")


_TAGS: dict[type[StrictModel], str] = {
    ConditionAll: "all",
    ConditionAny: "any",
    ConditionNot: "not",
    ConditionTest: "test",
}


def _shape(value: Any) -> str | None:
    """Which member of the union ``value`` is, by the key present (None: no condition)."""
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        if "not_" in value:
            return "not"
        return "test" if "path" in value or "op" in value else None
    for model, tag in _TAGS.items():
        if isinstance(value, model):
            return tag
    return None


def measure(condition: Condition) -> tuple[int, int]:
    """How many levels ``condition`` nests (a test is 1) and how many tests it holds."""
    if isinstance(condition, ConditionTest):
        return 1, 1
    children = [condition.not_] if isinstance(condition, ConditionNot) else _items(condition)
    sizes = [measure(child) for child in children]
    return 1 + max(depth for depth, _ in sizes), sum(tests for _, tests in sizes)


def _items(condition: ConditionAll | ConditionAny) -> list[Condition]:
    return condition.all if isinstance(condition, ConditionAll) else condition.any


def _untagged(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate through the union, with locations as the JSON reads (no member tag), and
    refuse a condition too deep or too large where it first becomes so."""
    try:
        condition = handler(value)
    except ValidationError as error:
        details: list[InitErrorDetails] = [
            {
                # Tagged errors start with the member's tag; a shape error has no location.
                "type": PydanticCustomError(line["type"], line["msg"]),
                "loc": line["loc"][1:],
                "input": line["input"],
            }
            for line in error.errors()
        ]
        raise ValidationError.from_exception_data(error.title, details) from None
    depth, tests = measure(condition)
    if depth > MAX_DEPTH:
        raise ValueError(f"nests {depth} levels deep; a condition nests at most {MAX_DEPTH}")
    if tests > MAX_TESTS:
        raise ValueError(f"holds {tests} tests; a condition holds at most {MAX_TESTS}")
    return condition


Condition = Annotated[
    Annotated[ConditionAll, Tag("all")]
    | Annotated[ConditionAny, Tag("any")]
    | Annotated[ConditionNot, Tag("not")]
    | Annotated[ConditionTest, Tag("test")],
    Discriminator(
        _shape,
        custom_error_type="condition_shape",
        custom_error_message='a condition is an object with "all", "any" or "not", '
        'or a test with "path", "op" and "value"',
    ),
    WrapValidator(_untagged),
]

ConditionAll.model_rebuild()
ConditionAny.model_rebuild()
ConditionNot.model_rebuild()


def condition_tests(
    condition: Condition, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], ConditionTest]]:
    """Every test of ``condition``, left to right, with its location under ``loc``."""
    if isinstance(condition, ConditionTest):
        yield loc, condition
    elif isinstance(condition, ConditionNot):
        yield from condition_tests(condition.not_, (*loc, "not"))
    else:
        key = "all" if isinstance(condition, ConditionAll) else "any"
        for index, item in enumerate(_items(condition)):
            yield from condition_tests(item, (*loc, key, index))


def condition_paths(condition: Condition) -> list[str]:
    """The paths ``condition`` reads, each once, in order of appearance."""
    return list(dict.fromkeys(test.path for _, test in condition_tests(condition)))


def steps_referenced(condition: Condition) -> set[str]:
    """The ids of the chain steps ``condition`` reads (``steps.<id>...``)."""
    return {path.split(".")[1] for path in condition_paths(condition) if path.startswith("steps.")}


def refuse_steps(
    condition: Condition,
    loc_prefix: tuple[str | int, ...] = ("condition",),
    *,
    available: Collection[str] | None = None,
) -> list[Problem]:
    """The ``steps`` paths ``condition`` may not read, as located problems: all of them
    outside a chain (``available`` None), else those naming a step not in ``available``
    (the steps that ran before this one)."""
    problems: list[Problem] = []
    for loc, test in condition_tests(condition, loc_prefix):
        segments = test.path.split(".")
        if segments[0] != "steps":
            continue
        if available is None:
            message = "steps paths are only for the steps of a chain"
        elif segments[1] not in available:
            earlier = ", ".join(sorted(available)) or "none"
            message = f"no earlier step has the id {segments[1]!r} (earlier steps: {earlier})"
        else:
            continue
        problems.append(((*loc, "path"), message, test.path))
    return problems
