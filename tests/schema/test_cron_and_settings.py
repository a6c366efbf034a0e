"""Pure pieces: the cron parser, task spec rules and settings safety checks."""

from __future__ import annotations

from datetime import date, time

import pytest
from pydantic import ValidationError

from schema.cron import CronError, parse_cron
from schema.settings import Settings


def test_cron_fields_ranges_steps_and_names() -> None:
    expression = parse_cron("*/15 9-17/4 1,15 JAN-mar mon-FRI")
    assert expression.minutes == {0, 15, 30, 45}
    assert expression.hours == {9, 13, 17}
    assert expression.days_of_month == {1, 15}
    assert expression.months == {1, 2, 3}
    assert expression.days_of_week == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").days_of_week == {0}
    assert parse_cron("@daily") == parse_cron("0 0 * * *")
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("* 24 * * *", "hour field: 24 is outside 0-23"),
        ("* * 0 * *", "day of month field: 0 is outside 1-31"),
        ("* * * 13 *", "month field: 13 is outside 1-12"),
        ("* * * * 8", "day of week field: 8 is outside 0-7"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("5-1 * * * *", "runs backwards"),
        ("a * * * *", "'a' is not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("@every 5m", "use interval_seconds"),
    ],
)
def test_cron_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_cron(text)


def test_day_of_month_and_week_are_anded_like_temporal() -> None:
    expression = parse_cron("0 9 13 * FRI")
    assert expression.times_on(date(2026, 11, 13)) == [time(9, 0)]  # Friday the 13th
    assert expression.times_on(date(2026, 11, 20)) == []  # a Friday, not the 13th
    assert expression.times_on(date(2026, 12, 13)) == []  # the 13th, a Sunday


def test_production_refuses_unsafe_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRONPILOT_ENV", "CRONPILOT_SECRET_KEY", "CRONPILOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="CRONPILOT_SECRET_KEY is required outside dev"):
        Settings()
    monkeypatch.setenv("CRONPILOT_SECRET_KEY", "short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings()
    monkeypatch.setenv("CRONPILOT_SECRET_KEY", "k" * 40)
    with pytest.raises(ValidationError, match="CRONPILOT_DATABASE_URL is required"):
        Settings()
    monkeypatch.setenv("CRONPILOT_DATABASE_URL", "postgresql+psycopg://db/cronpilot")
    settings = Settings()
    assert settings.allow_private_networks is False
    monkeypatch.setenv("CRONPILOT_ENV", "dev")
    assert Settings().allow_private_networks is True


def test_every_setting_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())
