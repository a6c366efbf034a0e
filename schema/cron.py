"""Five-field cron expressions: parsing with precise errors, and wall-clock matching.

Temporal compiles the same string into its calendar spec and decides when a schedule
fires; this module validates it up front with the same grammar (so the API can say which
field is wrong, and never accepts what Temporal refuses), tells which local wall-clock times
a day *should* have, so validation can spot the days on which a DST change makes Temporal
skip or double a run, and says when an expression never fires or fires unevenly.

Temporal's grammar, as its server parses it: shorthands are lowercase (``@daily``); a field
is a comma list of ``*``, ``n``, ``a-b``, each with an optional ``/step``; ``n/step`` runs
from n to the field's end; numbers are ASCII digits; months accept English names from
three letters (``jan``, ``January``), days of week from two (``mo``, ``Mon``), any case;
day of week 7 is Sunday. Not accepted: ``?``, ``L``, ``W``, ``#``, ``@every`` (use
``interval_seconds``), and the 6- and 7-field forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MAX_STEP = 1000
# The longest each month can be (February in a leap year).
MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_offset: int = 0
    shortest_name: int = 3


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1, 3),
    _Field("day of week", 0, 7, DAY_NAMES, 0, 2),
)


class CronError(ValueError):
    """A cron expression that cannot be parsed; the message names the field."""


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression: the set of values each field matches."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    def matches_day(self, day: date) -> bool:
        """Whether the date matches; day of month and day of week are ANDed, as in Temporal."""
        weekday = (day.weekday() + 1) % 7
        return (
            day.month in self.months
            and day.day in self.days_of_month
            and weekday in self.days_of_week
        )

    def times_on(self, day: date) -> list[time]:
        """The wall-clock times at which the expression fires on ``day``, ignoring DST."""
        if not self.matches_day(day):
            return []
        return [time(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]


def _value(token: str, spec: _Field) -> int:
    lower = token.lower()
    if spec.names and len(lower) >= spec.shortest_name and lower.isalpha():
        for index, name in enumerate(spec.names):
            if name.startswith(lower):
                return index + spec.name_offset
        raise CronError(f"{spec.name} field: {token!r} is not a {spec.name} name")
    if not (token.isascii() and token.isdigit()):
        raise CronError(f"{spec.name} field: {token!r} is not a number")
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise CronError(f"{spec.name} field: {number} is outside {spec.low}-{spec.high}")
    return number


@dataclass(frozen=True)
class _Part:
    """One list item of a field: ``low-high/step`` as Temporal reads it."""

    low: int
    high: int
    step: int
    text: str


def _parse_part(part: str, spec: _Field) -> _Part:
    if not part:
        raise CronError(f"{spec.name} field: empty list item")
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise CronError(f"{spec.name} field: step {step_text!r} must be a positive number")
        step = int(step_text)
        if step > MAX_STEP:  # Temporal keeps a step in 32 bits; far larger ones wrap around
            raise CronError(f"{spec.name} field: step {step} is larger than {MAX_STEP}")
    if base == "*":
        return _Part(spec.low, spec.high, step, part)
    if "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec), _value(last, spec)
        if low > high:
            raise CronError(f"{spec.name} field: range {base!r} runs backwards")
        return _Part(low, high, step, part)
    low = _value(base, spec)
    return _Part(low, spec.high if slash else low, step, part)


def _parse_field(text: str, spec: _Field) -> tuple[frozenset[int], list[_Part]]:
    parts = [_parse_part(part, spec) for part in text.split(",")]
    values = {value for p in parts for value in range(p.low, p.high + 1, p.step)}
    return frozenset(values), parts


def _fields(expression: str) -> list[str]:
    text = expression.strip()
    text = SHORTHANDS.get(text, text)
    if text.startswith("@"):
        known = ", ".join(SHORTHANDS)
        raise CronError(
            f"unknown shorthand {text!r}; the shorthands are {known} (lowercase); "
            "use interval_seconds for @every"
        )
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    return parts


def parse_cron(expression: str) -> CronExpression:
    """Parse a 5-field cron expression or an @shorthand as Temporal does; CronError if not."""
    parsed = [
        _parse_field(part, spec)[0] for part, spec in zip(_fields(expression), FIELDS, strict=True)
    ]
    days_of_week = frozenset(0 if d == 7 else d for d in parsed[4])
    return CronExpression(parsed[0], parsed[1], parsed[2], parsed[3], days_of_week)


def never_fires(expression: CronExpression) -> str | None:
    """Why the expression matches no date at all (say ``0 0 31 2 *``), or None."""
    if any(
        day <= MONTH_DAYS[month - 1]
        for month in expression.months
        for day in expression.days_of_month
    ):
        return None  # every existing date falls on each weekday within 28 years
    months = ", ".join(MONTH_NAMES[m - 1].capitalize() for m in sorted(expression.months))
    days = ", ".join(str(d) for d in sorted(expression.days_of_month))
    return f"it never fires: {months} never has day {days}"


def uneven_steps(expression: str) -> list[str]:
    """Warnings for steps that do not divide their field: ``*/100`` in the minute field
    matches minute 0 only (hourly), ``*/7`` restarts at each hour (…, :56, :00)."""
    warnings = []
    for part_text, spec in zip(_fields(expression), FIELDS, strict=True):
        for part in _parse_field(part_text, spec)[1]:
            if part.step == 1:
                continue
            values = list(range(part.low, part.high + 1, part.step))
            span = spec.high - spec.low + 1 if spec.name != "day of week" else 7
            if len(values) == 1:
                warnings.append(
                    f"{part.text!r} in the {spec.name} field matches {spec.name} "
                    f"{values[0]} only: the step is larger than the field, so it is not "
                    f"every {part.step}"
                )
            elif part.low == spec.low and part.high == spec.high and span % part.step:
                gap = span - values[-1] + values[0]
                warnings.append(
                    f"{part.text!r} in the {spec.name} field restarts at {values[0]} after "
                    f"{values[-1]}: that gap is {gap}, not {part.step}"
                )
    return warnings


def _numbers(text: str, spec: _Field) -> str:
    return re.sub(r"[A-Za-z]+", lambda match: str(_value(match.group(), spec)), text)


def canonical(expression: str) -> str:
    """The expression in the plainest form that means the same: shorthands expanded, names
    as numbers, and each field as the values it matches where a step makes the written form
    misleading (``*/100 * * * *`` becomes ``0 * * * *``)."""
    out = []
    for part_text, spec in zip(_fields(expression), FIELDS, strict=True):
        values, parts = _parse_field(part_text, spec)
        misleading = any(p.step > 1 and len(range(p.low, p.high + 1, p.step)) == 1 for p in parts)
        if misleading:
            out.append(",".join(str(v) for v in sorted(values)))
        elif spec.names:
            out.append(_numbers(part_text, spec))
        else:
            out.append(part_text)
    return " ".join(out)
