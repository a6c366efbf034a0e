"""The ``task_chain`` action: steps run one after another by a ``ChainWorkflow``.

A step is one of:
- ``{"id", "action"}``: an action of any other type, run with the task's retries and timeout;
- ``{"id", "task_id"}``: a run of another of the same user's tasks (recorded on that task,
  trigger ``chain``);
- ``{"id", "sleep_seconds"}``: a durable timer (days are fine);
- ``{"id", "wait_for_webhook": {"timeout_seconds"}}``: waits until its single-use resume URL
  is called; the request's JSON body becomes the step's output.

Each step may have a ``condition`` (false: the step is ``skipped``; its paths may read the
steps before it) and an ``on_failure``: ``stop`` (the chain fails) or ``continue``.
Later steps read earlier outputs in templates as ``{{ steps.<id>.output... }}``, and any wait
step's URL, from the chain's start, as ``{{ steps.<wait id>.resume_url }}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from schema.actions import Action, SingleAction, StrictModel
from schema.conditions import Condition, refuse_steps

StepId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
StepKind = Literal["action", "task", "sleep", "wait_for_webhook"]
StepStatus = Literal["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"]
MAX_STEPS = 50
MAX_SLEEP_SECONDS = 366 * 86400
MAX_WAIT_SECONDS = 90 * 86400


class WaitForWebhook(StrictModel):
    timeout_seconds: int = Field(
        86400,
        ge=1,
        le=MAX_WAIT_SECONDS,
        description="How long the step waits for its resume URL; then on_failure decides.",
    )


class ChainStep(StrictModel):
    """One step: exactly one of action, task_id, sleep_seconds and wait_for_webhook."""

    id: StepId = Field(description="Unique in the chain; later steps read steps.<id>.")
    action: Action | None = None
    task_id: UUID | None = None
    sleep_seconds: int | None = Field(None, ge=1, le=MAX_SLEEP_SECONDS)
    wait_for_webhook: WaitForWebhook | None = None
    condition: Condition | None = None
    on_failure: Literal["stop", "continue"] = "stop"

    @model_validator(mode="after")
    def _one_kind(self) -> ChainStep:
        given = [
            name
            for name in ("action", "task_id", "sleep_seconds", "wait_for_webhook")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of action, task_id, sleep_seconds and wait_for_webhook"
            )
        return self

    @property
    def kind(self) -> StepKind:
        if self.action is not None:
            return "action"
        if self.task_id is not None:
            return "task"
        if self.sleep_seconds is not None:
            return "sleep"
        return "wait_for_webhook"


class TaskChainConfig(StrictModel):
    steps: list[ChainStep] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _ids_and_references(self) -> TaskChainConfig:
        from schema.tasks import invalid

        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        seen: list[str] = []
        for index, step in enumerate(self.steps):
            if step.id in seen:
                problems.append((("steps", index, "id"), f"{step.id!r} is used twice", step.id))
            if step.condition is not None:
                problems.extend(
                    refuse_steps(step.condition, ("steps", index, "condition"), available=seen)
                )
            seen.append(step.id)
        if problems:
            raise invalid("TaskChainConfig", problems)
        return self


class TaskChainAction(StrictModel):
    type: Literal["task_chain"]
    config: TaskChainConfig


# What a task's `action` may be: any action, or a chain of them (not inside a chain).
AnyAction = Annotated[SingleAction | TaskChainAction, Field(discriminator="type")]


class StepState(BaseModel):
    """One step as the execution's ``steps`` lists it."""

    id: str
    kind: StepKind
    status: StepStatus = "pending"
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    resume_url: str | None = None


CHAIN_WORKFLOW = "ChainWorkflow"
CHAIN_STEP_WORKFLOW = "ChainStepWorkflow"
# The update a resume URL sends to its chain.
RESUME_UPDATE = "resume"


def chain_workflow_id(execution_id: UUID) -> str:
    """The chain of one execution (its resume tokens name it)."""
    return f"chain-{execution_id}"
