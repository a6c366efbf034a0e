"""Five-field cron expressions: parsing with precise errors, and wall-clock matching.

Temporal compiles the same string into its calendar spec and decides when a schedule
fires; this module only validates the syntax up front (so the API can say which field is
wrong) and tells which local wall-clock times a day *should* have, so validation can spot
the days on which a DST change makes Temporal skip or double a run.
"""

from __future__ import annotations

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
MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_offset: int = 0


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, tuple(MONTH_NAMES), 1),
    _Field("day of week", 0, 7, tuple(DAY_NAMES), 0),
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
    upper = token.upper()
    if upper in spec.names:
        return spec.names.index(upper) + spec.name_offset
    if not token.isdigit():
        raise CronError(f"{spec.name} field: {token!r} is not a number")
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise CronError(f"{spec.name} field: {number} is outside {spec.low}-{spec.high}")
    return number


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{spec.name} field: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{spec.name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec), _value(last, spec)
            if low > high:
                raise CronError(f"{spec.name} field: range {base!r} runs backwards")
        else:
            low = _value(base, spec)
            high = spec.high if step_text else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> CronExpression:
    """Parse a 5-field cron expression or an @shorthand; raise CronError when invalid."""
    text = SHORTHANDS.get(expression.strip().lower(), expression.strip())
    if text.startswith("@"):
        raise CronError(f"unknown shorthand {text!r}; use interval_seconds for @every")
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    parsed = [_parse_field(part, spec) for part, spec in zip(parts, FIELDS, strict=True)]
    days_of_week = frozenset(0 if d == 7 else d for d in parsed[4])
    return CronExpression(parsed[0], parsed[1], parsed[2], parsed[3], days_of_week)
