"""Evaluate a task's condition: pure and deterministic, so it runs inside the workflow.

``evaluate`` answers whether the condition holds and a short reason the execution record
shows when it does not ("payload.amount is 50, not gt 100"). No I/O, clock or randomness:
the context holds everything, built once by ``condition_context`` from ``workflow.now()``.

Semantics (the values are JSON: dict, list, str, int, float, bool, None):

- A path walks the context: a key of an object, or an integer segment indexing a list (on
  an object it is the key ``"0"``). A path is missing when a key is absent, an index is out
  of range, or a segment steps into anything else (a string, a number, null).
- A missing path makes every test false (``ne`` and ``not_in`` too), except ``exists``:
  false when missing, true when present; ``"value": false`` inverts it. A key holding null
  exists (test it with ``eq null``). ``payload`` is always present (null for a run without
  one); ``last`` is missing before a task's first execution, ``steps`` outside chains.
- ``eq``/``ne`` compare JSON values: 1 equals 1.0; a bool equals only a bool (true is not
  1); lists compare item by item, objects key by key.
- ``gt``/``gte``/``lt``/``lte`` compare two numbers, or two strings (by code point: ISO
  dates order correctly). Anything else (a string against a number, a bool against a
  number, null) is false, never an error.
- ``in``/``not_in``: the value is (is not) equal, as ``eq`` says, to an item of the list.
- ``contains``: a string holds the substring, a list holds an item equal to the value, an
  object has the value as a key.
- ``matches``: an RE2 search (linear time, no backtracking) of the pattern in a string,
  on its first ``MAX_SUBJECT`` characters (where ``$`` then matches); false for anything
  not a string.
- ``all`` holds when every item holds, ``any`` when one does (both stop at the first item
  that decides), ``not`` when its condition does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import re2  # type: ignore[import-untyped]

from schema.conditions import (
    ORDER_OPS,
    Condition,
    ConditionAll,
    ConditionNot,
    ConditionTest,
    compile_pattern,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

MAX_SUBJECT = 10_000
# How much of a value a reason shows.
SHOWN_CHARACTERS = 60
SHOWN_ITEMS = 5
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Missing:
    """What a path that leads nowhere resolves to."""


MISSING: Final = _Missing()


def evaluate(condition: Condition, context: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``condition`` holds in ``context``, and why, in a short sentence."""
    if isinstance(condition, ConditionTest):
        return _test(condition, context)
    if isinstance(condition, ConditionNot):
        held, reason = evaluate(condition.not_, context)
        return not held, f"not ({reason})"
    if isinstance(condition, ConditionAll):
        count = len(condition.all)
        for item in condition.all:
            held, reason = evaluate(item, context)
            if not held:
                return False, f"not all of {count} held: {reason}"
        return True, f"all of {count} held"
    count = len(condition.any)
    first = ""
    for item in condition.any:
        held, reason = evaluate(item, context)
        if held:
            return True, f"any of {count} held: {reason}"
        first = first or reason
    return False, f"none of {count} held, first: {first}"


def condition_context(
    *,
    now: datetime,
    timezone: str,
    payload: Any,
    last: Mapping[str, Any] | None,
    steps: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The values a condition reads: ``now`` (aware, say ``workflow.now()``) as the wall
    clock of ``timezone``, the payload, the previous execution (``status``, ``result``)
    and, in a chain, the steps that ran (``{id: {"status": ..., "output": ...}}``)."""
    if now.tzinfo is None or now.utcoffset() is None:
        # A naive datetime would be read in the host's zone: not deterministic.
        raise ValueError("now must carry its offset (workflow.now() does)")
    local = now.astimezone(ZoneInfo(timezone))
    context: dict[str, Any] = {
        "payload": payload,
        "now": {
            "weekday": WEEKDAYS[local.weekday()],
            "hour": local.hour,
            "minute": local.minute,
            "date": local.date().isoformat(),
        },
    }
    if last is not None:
        context["last"] = dict(last)
    if steps is not None:
        context["steps"] = dict(steps)
    return context


def resolve(context: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in ``context``, or ``MISSING``."""
    root, *segments = path.split(".")
    node = context.get(root, MISSING)
    for segment in segments:
        if isinstance(node, dict):
            node = node.get(segment, MISSING)
        elif isinstance(node, list) and segment.isascii() and segment.isdigit():
            index = int(segment)
            node = node[index] if index < len(node) else MISSING
        else:  # into a scalar, or MISSING itself
            return MISSING
    return node


def _test(test: ConditionTest, context: Mapping[str, Any]) -> tuple[bool, str]:
    actual = resolve(context, test.path)
    if test.op == "exists":
        present = actual is not MISSING
        return present == (test.value is not False), (
            f"{test.path} exists" if present else f"{test.path} is missing"
        )
    if actual is MISSING:
        return False, f"{test.path} is missing"
    held = _OPS[test.op](actual, test.value)
    reason = (
        f"{test.path} is {_show(actual)}, {'' if held else 'not '}{test.op} {_show(test.value)}"
    )
    if test.op in ORDER_OPS and not _comparable(actual, test.value):
        reason += " (they do not compare: two numbers or two strings do)"
    return held, reason


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    """JSON equality; iterative, so a deeply nested payload cannot exhaust the stack."""
    pairs = [(left, right)]
    while pairs:
        a, b = pairs.pop()
        if _is_number(a) and _is_number(b):
            if a != b:
                return False
        elif isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            pairs.extend((a[key], b[key]) for key in a)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pairs.extend(zip(a, b, strict=True))
        elif not (
            isinstance(a, str)
            and isinstance(b, str)
            and a == b
            or isinstance(a, bool)
            and isinstance(b, bool)
            and a == b
            or a is None
            and b is None
        ):
            return False
    return True


def _comparable(a: Any, b: Any) -> bool:
    return _is_number(a) and _is_number(b) or isinstance(a, str) and isinstance(b, str)


def _member(actual: Any, values: Any) -> bool:
    return isinstance(values, list) and any(_equal(actual, value) for value in values)


def _contains(actual: Any, value: Any) -> bool:
    if isinstance(actual, str | dict):
        return isinstance(value, str) and value in actual
    if isinstance(actual, list):
        return any(_equal(item, value) for item in actual)
    return False


def _matches(actual: Any, pattern: Any) -> bool:
    if not isinstance(actual, str) or not isinstance(pattern, str):
        return False
    try:
        return compile_pattern(pattern).search(actual[:MAX_SUBJECT]) is not None
    except re2.error:  # only a condition that skipped validation gets here
        return False


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equal,
    "ne": lambda a, b: not _equal(a, b),
    "gt": lambda a, b: _comparable(a, b) and a > b,
    "gte": lambda a, b: _comparable(a, b) and a >= b,
    "lt": lambda a, b: _comparable(a, b) and a < b,
    "lte": lambda a, b: _comparable(a, b) and a <= b,
    "in": _member,
    "not_in": lambda a, b: isinstance(b, list) and not _member(a, b),
    "contains": _contains,
    "matches": _matches,
}


def _show(value: Any, depth: int = 0) -> str:
    """``value`` as compact JSON, cut to about ``SHOWN_CHARACTERS``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif _is_number(value):
        text = repr(value)
    elif isinstance(value, str):
        text = (
            '"'
            + value[:SHOWN_CHARACTERS]
            .replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            + '"'
        )
    elif isinstance(value, list | dict):
        text = _show_container(value, depth)
    else:
        text = type(value).__name__
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def _show_container(value: list[Any] | dict[Any, Any], depth: int) -> str:
    """The first few items of a list or object, two levels deep at most."""
    opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
    if depth >= 2 and value:
        return opening + "…" + closing
    if isinstance(value, dict):
        keys = [key for key, _ in zip(value, range(SHOWN_ITEMS), strict=False)]
        parts = [f"{_show(key, depth + 1)}:{_show(value[key], depth + 1)}" for key in keys]
    else:
        parts = [_show(item, depth + 1) for item in value[:SHOWN_ITEMS]]
    if len(value) > SHOWN_ITEMS:
        parts.append("…")
    return opening + ",".join(parts) + closing
