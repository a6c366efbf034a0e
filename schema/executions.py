"""Execution shapes: the history records workflows write and the API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schema.actions import Action
from schema.chains import StepState, TaskChainConfig
from schema.tasks import NotifySpec, RetrySpec, TaskType

ExecutionStatus = Literal["running", "succeeded", "failed", "skipped", "cancelled", "timed_out"]
Trigger = Literal["schedule", "manual", "webhook", "event", "email", "chain"]
FINAL_STATUSES: tuple[ExecutionStatus, ...] = (
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "timed_out",
)


class LogEntry(BaseModel):
    at: datetime
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str


class ExecutionError(BaseModel):
    type: str
    message: str


class ActionContext(BaseModel):
    """What an action may refer to in its templates, besides secrets."""

    task_id: UUID
    task_name: str
    trigger: Trigger
    scheduled_at: datetime | None = None
    payload: Any = None
    steps: dict[str, Any] = Field(default_factory=dict)


class ActionInput(BaseModel):
    """Input of an action activity."""

    user_id: UUID
    workflow_id: str
    run_id: str
    action: Action
    retry: RetrySpec
    context: ActionContext


class ActionOutcome(BaseModel):
    """What a successful action activity returns."""

    result: Any = None
    logs: list[LogEntry] = Field(default_factory=list)
    attempt: int = 1


class ExecutionStarted(BaseModel):
    """Input of ``record_execution_started``."""

    execution_id: UUID
    task_id: UUID
    user_id: UUID
    workflow_id: str
    run_id: str
    trigger: Trigger
    scheduled_at: datetime | None
    started_at: datetime
    logs: list[LogEntry] = Field(default_factory=list)
    rerun_of: UUID | None = None


class ExecutionFinished(ExecutionStarted):
    """Input of ``record_execution_finished``: the final record and what it means for the task."""

    # None when the run's input could not be read: then the run moves no task status.
    task_type: TaskType | None
    status: ExecutionStatus
    finished_at: datetime
    attempts: int
    result: Any = None
    error: ExecutionError | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    # A one-time task's run_at when the run started: a task rescheduled meanwhile stays active.
    run_at: datetime | None = None
    # How many event hops led to this run: its own built-in event goes one further.
    depth: int = 0


class LastExecutionQuery(BaseModel):
    """Input of ``last_execution``: the run asking, for its task's previous execution."""

    task_id: UUID
    workflow_id: str
    before: datetime


class ChainInput(BaseModel):
    """Input of a ``ChainWorkflow``: one execution's chain, and what its steps may read.
    Fields can only be added, with defaults: chains in flight carry older ones."""

    execution_id: UUID
    task_id: UUID
    user_id: UUID
    task_name: str
    # The TaskWorkflow run whose execution record the chain's steps are written to.
    workflow_id: str
    run_id: str
    trigger: Trigger
    scheduled_at: datetime | None = None
    payload: Any = None
    timezone: str = "UTC"
    retry: RetrySpec
    timeout_seconds: int
    config: TaskChainConfig
    depth: int = 0


class ChainStepRun(BaseModel):
    """Input of a ``ChainStepWorkflow``: one action step and its per-attempt timeout."""

    action: ActionInput
    timeout_seconds: int


class ChainStart(BaseModel):
    """Input of ``start_chain``: the steps as they start, to sign and record."""

    workflow_id: str
    run_id: str
    chain_workflow_id: str
    steps: list[StepState]


class StepsRecord(BaseModel):
    """Input of ``record_steps``: a chain's steps now."""

    workflow_id: str
    run_id: str
    steps: list[StepState]


class TaskLookup(BaseModel):
    task_id: UUID
    user_id: UUID


class NotifyInput(BaseModel):
    """What a notification says about one run."""

    task_id: UUID
    task_name: str
    execution_id: UUID
    workflow_id: str
    run_id: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime
    error: ExecutionError | None = None
    notify: NotifySpec


class ExecutionTemporal(BaseModel):
    ui_url: str


class ExecutionSummary(BaseModel):
    """An execution as lists return it: without its logs, result and steps."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    task_id: UUID
    workflow_id: str
    run_id: str
    trigger: Trigger
    status: ExecutionStatus
    scheduled_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    attempts: int
    error: ExecutionError | None
    rerun_of: UUID | None = Field(None, description="The execution this one reran.")
    temporal: ExecutionTemporal


class ExecutionPublic(ExecutionSummary):
    """One execution as the API returns it, in full."""

    result: Any
    logs: list[LogEntry]
    steps: list[dict[str, Any]]
