"""Task shapes: what a user sends (``TaskCreate``/``TaskUpdate``) and gets back (``TaskPublic``)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from schema.actions import CONFIG_MODE, HttpUrl, SingleLine, StrictModel
from schema.chains import AnyAction
from schema.conditions import Condition, refuse_steps
from schema.cron import CronError, never_fires, parse_cron
from schema.json_values import compact_size, heaviest_part, json_value_problem
from schema.triggers import Delivery, TriggerSpec

TaskType = Literal["one_time", "recurring", "trigger"]
TaskStatus = Literal["active", "paused", "completed", "failed"]
OverlapPolicy = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]
NotifyOn = Literal["failure", "success", "always"]


# Every layer (pydantic, Temporal's payloads, the databases' JSON) decodes far more than this.
MAX_JSON_DEPTH = 32
MAX_TASK_BYTES = 512 * 1024
# Temporal's calendars end with 2100; instants outside these bounds are refused.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)
# Names the tz database carries that are not zones: aliases of the host's zone, or
# variants of the whole database.
NOT_ZONES = {"Factory", "localtime", "posixrules"}


def canonical_zone(name: str) -> bool:
    """Of the names ``ZoneInfo`` loads, an IANA zone (``Europe/Berlin``, ``UTC``,
    ``US/Eastern``), not a host alias or a variant copy of the database. No file is read
    here: workflows validate their input inside Temporal's sandbox, which forbids it."""
    return name not in NOT_ZONES and not name.startswith(("posix/", "right/"))


def bounds_problems(data: Any) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Where a task (as sent) nests deeper than ``MAX_JSON_DEPTH`` levels, holds what no
    JSON store keeps (``json_value_problem``), or weighs more than ``MAX_TASK_BYTES`` as
    compact JSON. Iterative: a hostile nesting cannot exhaust the stack."""
    problem = json_value_problem(data, MAX_JSON_DEPTH, "(counted from the task)")
    if problem:
        return [(problem[0], problem[1], None)]
    size = compact_size(data)
    if size > MAX_TASK_BYTES:
        path, weight = heaviest_part(data)
        message = (
            f"the task is {size} bytes as JSON, over the limit of {MAX_TASK_BYTES}; "
            f"{weight} bytes of it are here"
        )
        return [(path, message, None)]
    return []


def bounded(title: str, data: Any) -> Any:
    """``data`` as it is, or a located ValidationError when it is out of bounds."""
    problems = bounds_problems(data)
    if problems:
        raise invalid(title, problems)
    return data


def invalid(title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> ValidationError:
    """A ValidationError with one located message per problem (pydantic nests the locations)."""
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError("invalid", message), "loc": loc, "input": value}
        for loc, message, value in problems
    ]
    return ValidationError.from_exception_data(title, details)


def _stored(info: ValidationInfo) -> bool:
    """A spec read back (from the database, a schedule or a run's input), not a request:
    the checks added since it was saved do not apply (see ``schema.actions.STORED``)."""
    context = info.context
    return isinstance(context, dict) and context.get(CONFIG_MODE) == "stored"


def utc_instant(value: datetime, zone: str) -> datetime:
    """``value`` in UTC, read in ``zone`` when it has no offset; ValueError out of bounds."""
    if not EARLIEST.year <= value.year <= LATEST.year:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    utc = value.astimezone(UTC)
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return utc


class ScheduleSpec(StrictModel):
    """When a one-time or recurring task fires."""

    run_at: datetime | None = Field(
        None,
        description="one_time: the instant. Without an offset it is read in `timezone`; "
        "it comes back in UTC. At most 2100-12-31T23:59:59Z.",
    )
    cron: str | None = Field(None, description="recurring: 5-field cron, XOR interval_seconds.")
    interval_seconds: int | None = Field(None, ge=1, le=366 * 86400)
    timezone: str = Field("UTC", description="IANA time zone of the cron expression.")
    start_at: datetime | None = Field(
        None, description="Read like run_at; between 1970 and 2100; comes back in UTC."
    )
    end_at: datetime | None = Field(
        None, description="Read like run_at; between 1970 and 2100; comes back in UTC."
    )
    jitter_seconds: int = Field(0, ge=0, le=86400)
    overlap: OverlapPolicy = "skip"
    catchup_window_seconds: int = Field(60, ge=10, le=366 * 86400)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str, info: ValidationInfo) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        if not _stored(info) and not canonical_zone(value):
            raise ValueError(f"{value!r} is not an IANA zone name (say Europe/Berlin or UTC)")
        return value

    @field_validator("cron")
    @classmethod
    def _parsable_cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _stored(info):  # Temporal took it when it was saved
            return value
        try:
            reason = never_fires(parse_cron(value))
        except CronError as error:
            raise ValueError(str(error)) from None
        if reason:
            raise ValueError(reason)
        return " ".join(value.split())

    @model_validator(mode="after")
    def _window(self, info: ValidationInfo) -> ScheduleSpec:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        for name in ("run_at", "start_at", "end_at"):
            value = getattr(self, name)
            if value is None or (_stored(info) and value.tzinfo is not None):
                continue
            try:
                setattr(self, name, utc_instant(value, self.timezone))
            except ValueError as error:
                problems.append(((name,), str(error), value))
        if problems:
            raise invalid("ScheduleSpec", problems)
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise invalid("ScheduleSpec", [(("end_at",), "must be after start_at", self.end_at)])
        return self


class RetrySpec(StrictModel):
    """How a failed action is retried (Temporal's retry policy, plus full jitter)."""

    max_attempts: int = Field(3, ge=1, le=100)
    initial_interval_seconds: float = Field(1, gt=0, le=86400)
    backoff_coefficient: float = Field(2.0, ge=1, le=100)
    max_interval_seconds: float = Field(300, gt=0, le=7 * 86400)
    jitter: bool = True
    non_retryable_errors: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _intervals(self) -> RetrySpec:
        if self.max_interval_seconds < self.initial_interval_seconds:
            raise invalid(
                "RetrySpec",
                [
                    (
                        ("max_interval_seconds",),
                        "must be at least initial_interval_seconds",
                        self.max_interval_seconds,
                    )
                ],
            )
        return self


class NotifySpec(StrictModel):
    """Who hears about a run (email and/or a JSON POST)."""

    on: list[NotifyOn] = Field(
        default_factory=lambda: list[NotifyOn](["failure"]),
        description="After a run whose status is failure (failed or timed_out), success "
        "(succeeded), or always (any ending but cancelled and skipped).",
    )
    email: list[SingleLine] = Field(
        default_factory=list, max_length=20, description="Addresses to email a summary to."
    )
    webhook_url: HttpUrl | None = Field(
        None, max_length=2048, description="A URL to POST a JSON summary to (not a template)."
    )

    def wants(self, status: str) -> bool:
        """Whether a run that ended with ``status`` is notified."""
        if not self.email and not self.webhook_url:
            return False
        if status in ("cancelled", "skipped", "running"):
            return False
        return (
            "always" in self.on
            or ("success" in self.on and status == "succeeded")
            or ("failure" in self.on and status in ("failed", "timed_out"))
        )


class TaskSpec(StrictModel):
    """Everything a user configures on a task; also the snapshot each run carries."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    type: TaskType
    schedule: ScheduleSpec | None = None
    trigger: TriggerSpec | None = Field(
        None, description="trigger tasks: what starts them (webhook, event or email)."
    )
    action: AnyAction
    condition: Condition | None = Field(
        None,
        description="Checked before the action; false records the run as skipped. "
        '{"all": [...]}, {"any": [...]}, {"not": {...}} or {"path", "op", "value"}.',
    )
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_seconds: int = Field(300, ge=1, le=7 * 86400, description="Per attempt.")
    concurrency: int = Field(
        1,
        ge=1,
        le=100,
        description="trigger tasks: how many deliveries run at once; the rest queue in "
        "arrival order.",
    )
    notify: NotifySpec = Field(default_factory=NotifySpec)
    tags: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not tag or len(tag) > 50 for tag in value):
            raise ValueError("tags must be 1-50 characters")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        problems = self._problems()
        if problems:
            raise invalid("TaskSpec", problems)
        return self

    def _problems(self) -> list[tuple[tuple[str | int, ...], str, Any]]:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        schedule = self.schedule
        if self.condition is not None:
            problems.extend(refuse_steps(self.condition))
        if self.type == "trigger":
            if self.trigger is None:
                problems.append((("trigger",), "required for a trigger task", None))
            if schedule is not None:
                message = "not allowed on a trigger task (an email trigger has poll_seconds)"
                problems.append((("schedule",), message, None))
            return problems
        if self.trigger is not None:
            problems.append((("trigger",), f"only for trigger tasks, not {self.type}", None))
        if schedule is None:
            problems.append((("schedule",), f"required for a {self.type} task", None))
        elif self.type == "one_time":
            if schedule.run_at is None:
                problems.append((("schedule", "run_at"), "required for a one_time task", None))
            for name in ("cron", "interval_seconds"):
                if getattr(schedule, name) is not None:
                    problems.append((("schedule", name), "not allowed on a one_time task", None))
        elif (schedule.cron is None) == (schedule.interval_seconds is None):
            problems.append((("schedule",), "give exactly one of cron and interval_seconds", None))
        elif schedule.run_at is not None:
            problems.append((("schedule", "run_at"), "only for one_time tasks", schedule.run_at))
        return problems

    def spec_hash(self) -> str:
        """A stable digest of the spec, to detect a Temporal schedule that drifted."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class TaskCreate(TaskSpec):
    """Body of POST /api/tasks and PUT /api/tasks/{id}."""

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return bounded("TaskCreate", data)


class TaskUpdate(BaseModel):
    """Body of PATCH: the fields to change; the merged task is validated as a whole."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return bounded("TaskUpdate", data)

    name: str | None = None
    description: str | None = None
    type: TaskType | None = None
    schedule: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    condition: dict[str, Any] | None = None
    retry: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    concurrency: int | None = None
    notify: dict[str, Any] | None = None
    tags: list[str] | None = None


class TemporalLinks(BaseModel):
    schedule_id: str | None
    workflow_id_prefix: str
    ui_url: str


class TaskPublic(TaskSpec):
    """A task as the API returns it."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: UUID
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    run_count: int
    failure_count: int
    temporal: TemporalLinks

    @model_validator(mode="after")
    def _consistent(self) -> TaskPublic:  # a stored task was validated when it was saved
        return self


class RunRef(BaseModel):
    """One Temporal run: a workflow id and its run id."""

    workflow_id: str
    run_id: str | None = None


class TaskRunInput(BaseModel):
    """Input of one ``TaskWorkflow`` run; schedules carry it, so runs never need the database.
    Fields can only be added, with defaults: schedules and runs in flight carry older ones."""

    task_id: UUID
    user_id: UUID
    task: TaskSpec
    trigger: Literal["schedule", "manual", "webhook", "event", "email", "chain"] = "schedule"
    payload: Any = None
    scheduled_at: datetime | None = None
    # Runs to wait for before the action (run now under a buffer or cancel_other policy).
    wait_for: list[RunRef] = Field(default_factory=list)
    # Set by the API when it starts a run, so it can answer with the execution's id.
    execution_id: UUID | None = None
    # The execution a rerun repeats.
    rerun_of: UUID | None = None
    # A trigger's delivery this run is for, and how many event hops led to it.
    delivery_id: str | None = None
    depth: int = 0


class TriggerInput(BaseModel):
    """Input of a ``TriggerWorkflow`` run, also what it carries across continue-as-new.
    Fields can only be added, with defaults: workflows in flight carry older ones."""

    task_id: UUID
    user_id: UUID
    task: TaskSpec
    paused: bool = False
    # Deliveries accepted and not started yet, in arrival order.
    queue: list[Delivery] = Field(default_factory=list)
    # Digests of the newest delivery ids (oldest first): the dedup window.
    seen: list[str] = Field(default_factory=list)
    # Deliveries still running when the previous run continued as new: they count
    # against `concurrency` until they end.
    running: list[RunRef] = Field(default_factory=list)


class TriggerConfig(BaseModel):
    """The ``configure`` signal: the task as saved now (sent on every change of it)."""

    task: TaskSpec
    paused: bool = False
