"""``ChainWorkflow``: the steps of a ``task_chain`` action, one after another, durably.

A chain is a child of the ``TaskWorkflow`` run whose action it is, and writes its steps onto
that run's execution as they move (``record_steps``). Action steps run as child
``ChainStepWorkflow``s (the action's activity, with the task's retries and timeout); task
steps as child ``TaskWorkflow``s of the other task (recorded on it, trigger ``chain``);
sleeps are durable timers; a wait step waits for the ``resume`` update its signed URL sends.

It returns ``{"result", "steps", "logs"}``. A step that fails with ``on_failure: stop``
fails the chain with that step's error type (details: the steps and logs); a cancellation
cancels the running step and fails the chain with type ``Cancelled`` (same details), which
the parent records as a cancelled execution.

Chains sleep and wait for days, so they outlive deployments: change this module only in
replay-safe ways (``workflow.patched``, input fields added with defaults, or a new workflow
type for new behaviour) and keep the replay test (tests/workflows/test_replay.py) green.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.chain import ChainActivities
    from schema.actions import ACTION_ROUTES, STORED
    from schema.chains import (
        CHAIN_STEP_WORKFLOW,
        CHAIN_WORKFLOW,
        RESUME_UPDATE,
        ChainStep,
        StepState,
    )
    from schema.executions import (
        ActionContext,
        ActionInput,
        ActionOutcome,
        ChainInput,
        ChainStart,
        ChainStepRun,
        LogEntry,
        StepsRecord,
        TaskLookup,
    )
    from schema.tasks import TaskRunInput, TaskSpec
    from schema.temporal_ids import TASK_WORKFLOW, code_queue, schedule_id, search_attributes
    from schema.triggers import MAX_EVENT_DEPTH
    from workflows.conditions import condition_context, evaluate
    from workflows.failures import failure_from, retry_policy_for
    from workflows.trigger import decode_stored

RECORD_TIMEOUT = timedelta(seconds=30)
# Writing steps retries a while; a database outage delays the live view, never the chain.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
ACTION_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
TERMINAL = ("succeeded", "failed", "skipped", "cancelled")


class ChainCancelled(Exception):
    """The chain was cancelled while it wrote its steps (the activity reports it so)."""


class StepFailed(Exception):
    def __init__(self, error_type: str, message: str, logs: list[LogEntry] | None = None) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.logs = logs or []


@workflow.defn(name=CHAIN_WORKFLOW)
class ChainWorkflow:
    @workflow.init
    def __init__(self, raw: RawValue) -> None:
        self._input = decode_stored(raw, ChainInput)
        self._steps = [StepState(id=step.id, kind=step.kind) for step in self._input.config.steps]
        self._resumed: dict[str, Any] = {}
        self._logs: list[LogEntry] = []

    @workflow.query
    def steps(self) -> list[dict[str, Any]]:
        return [step.model_dump(mode="json") for step in self._steps]

    @workflow.update(name=RESUME_UPDATE)
    def resume(self, step_id: str, body: Any) -> str:
        """Resume a wait step (or one not reached yet: it then goes on at once)."""
        self._resumed[step_id] = body
        return "resumed"

    @resume.validator
    def _resumable(self, step_id: str, body: Any) -> None:
        state = next((step for step in self._steps if step.id == step_id), None)
        if state is None or state.kind != "wait_for_webhook":
            raise ApplicationError(f"no wait step {step_id!r}", type="UnknownStep")
        if step_id in self._resumed or state.status in TERMINAL:
            how = "resumed" if step_id in self._resumed else state.status
            raise ApplicationError(f"step {step_id!r} is {how} already", type="NotWaiting")

    @workflow.run
    async def run(self, raw: RawValue) -> dict[str, Any]:
        chain = self._input
        urls = await workflow.execute_activity_method(
            ChainActivities.start_chain,
            ChainStart(
                workflow_id=chain.workflow_id,
                run_id=chain.run_id,
                chain_workflow_id=workflow.info().workflow_id,
                steps=self._steps,
            ),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
        outputs: dict[str, dict[str, Any]] = {}
        for state in self._steps:
            state.resume_url = urls.get(state.id)
            outputs[state.id] = {
                "status": "pending",
                "output": None,
                "resume_url": state.resume_url,
            }
        try:
            for step, state in zip(chain.config.steps, self._steps, strict=True):
                await self._step(step, state, outputs)
        except (asyncio.CancelledError, ChainCancelled):
            await self._end_cancelled()
            raise ApplicationError(
                "cancelled", self._details(), type="Cancelled", non_retryable=True
            ) from None
        except StepFailed as failure:
            await self._record()
            raise ApplicationError(
                failure.message, self._details(), type=failure.type, non_retryable=True
            ) from None
        await self._record()
        result = {
            "steps": {
                state.id: {"status": state.status, "output": state.output} for state in self._steps
            }
        }
        return {"result": result, **self._details()}

    async def _step(self, step: ChainStep, state: StepState, outputs: dict[str, Any]) -> None:
        chain = self._input
        if step.condition is not None:
            context = condition_context(
                now=workflow.now(),
                timezone=chain.timezone,
                payload=chain.payload,
                last=None,
                steps=outputs,
            )
            held, reason = evaluate(step.condition, context)
            if not held:
                state.status, state.error = (
                    "skipped",
                    {"type": "ConditionNotMet", "message": reason},
                )
                state.finished_at = workflow.now()
                outputs[state.id]["status"] = "skipped"
                await self._record()
                return
        state.status = "waiting" if step.kind == "wait_for_webhook" else "running"
        state.started_at = workflow.now()
        await self._record()
        try:
            state.output = await self._run(step, outputs)
            state.status = "succeeded"
        except StepFailed as failure:
            state.status = "failed"
            state.error = {"type": failure.type, "message": failure.message}
            self._logs += failure.logs
            if step.on_failure == "stop":
                state.finished_at = workflow.now()
                for later in self._steps:
                    if later.status == "pending":
                        later.status = "skipped"
                        later.error = {"type": "ChainStopped", "message": f"step {step.id} failed"}
                raise StepFailed(failure.type, f"step {step.id}: {failure.message}") from None
        state.finished_at = workflow.now()
        outputs[state.id] = {
            "status": state.status,
            "output": state.output,
            "resume_url": state.resume_url,
        }
        await self._record()

    async def _run(self, step: ChainStep, outputs: dict[str, Any]) -> Any:
        if step.action is not None:
            return await self._action(step, outputs)
        if step.task_id is not None:
            return await self._task(step)
        if step.sleep_seconds is not None:
            await workflow.sleep(step.sleep_seconds)
            return None
        assert step.wait_for_webhook is not None
        timeout = step.wait_for_webhook.timeout_seconds
        try:
            await workflow.wait_condition(
                lambda: step.id in self._resumed, timeout=timedelta(seconds=timeout)
            )
        except TimeoutError:
            raise StepFailed("WaitTimedOut", f"not resumed within {timeout} s") from None
        return self._resumed[step.id]

    async def _action(self, step: ChainStep, outputs: dict[str, Any]) -> Any:
        chain = self._input
        assert step.action is not None
        action_input = ActionInput(
            user_id=chain.user_id,
            workflow_id=chain.workflow_id,
            run_id=chain.run_id,
            action=step.action,
            retry=chain.retry,
            context=ActionContext(
                task_id=chain.task_id,
                task_name=chain.task_name,
                trigger=chain.trigger,
                scheduled_at=chain.scheduled_at,
                payload=chain.payload,
                steps=outputs,
            ),
        )
        try:
            outcome = await workflow.execute_child_workflow(
                CHAIN_STEP_WORKFLOW,
                ChainStepRun(action=action_input, timeout_seconds=chain.timeout_seconds),
                id=f"{workflow.info().workflow_id}-{step.id}",
                result_type=ActionOutcome,
                search_attributes=search_attributes(chain.task_id, chain.user_id),
            )
        except ChildWorkflowError as error:
            if is_cancelled_exception(error):
                raise asyncio.CancelledError() from None
            failure = failure_from(error.cause or error, chain.retry)
            raise StepFailed(failure.error.type, failure.error.message, failure.logs) from None
        self._logs += outcome.logs
        return outcome.result

    async def _task(self, step: ChainStep) -> Any:
        chain = self._input
        assert step.task_id is not None
        spec = await workflow.execute_activity_method(
            ChainActivities.load_task,
            TaskLookup(task_id=step.task_id, user_id=chain.user_id),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
        if spec is None:
            raise StepFailed("TaskNotFound", f"task {step.task_id} does not exist any more")
        if chain.depth + 1 > MAX_EVENT_DEPTH:
            raise StepFailed(
                "TooDeep",
                f"task {step.task_id} would run {chain.depth + 1} hops deep (chains and "
                f"events starting each other), over the limit of {MAX_EVENT_DEPTH}",
            )
        try:  # read as stored: a check added since it was saved does not refuse it
            task = TaskSpec.model_validate(spec, context=STORED)
        except ValueError as error:
            raise StepFailed("InvalidTask", f"task {step.task_id}: {error}"[:1000]) from None
        run_input = TaskRunInput(
            task_id=step.task_id,
            user_id=chain.user_id,
            task=task,
            trigger="chain",
            payload=chain.payload,
            scheduled_at=workflow.now(),
            depth=chain.depth + 1,
        )
        try:
            returned = await workflow.execute_child_workflow(
                TASK_WORKFLOW,
                run_input,
                id=f"{schedule_id(step.task_id)}-chain-{chain.execution_id}-{step.id}",
                search_attributes=search_attributes(step.task_id, chain.user_id),
                memo={"task_id": str(step.task_id), "user_id": str(chain.user_id)},
            )
        except ChildWorkflowError as error:
            if is_cancelled_exception(error):
                raise asyncio.CancelledError() from None
            cause = error.cause
            message = getattr(cause, "message", None) or str(cause or error)
            error_type = getattr(cause, "type", None) or "TaskFailed"
            raise StepFailed(error_type, f"task {step.task_id}: {message}") from None
        return returned

    async def _end_cancelled(self) -> None:
        now = workflow.now()
        for state in self._steps:
            if state.status in ("running", "waiting"):
                state.status, state.finished_at = "cancelled", now
            elif state.status == "pending":
                state.status = "cancelled"
        with contextlib.suppress(ChainCancelled, asyncio.CancelledError):
            await self._record()

    def _details(self) -> dict[str, Any]:
        return {
            "steps": [step.model_dump(mode="json") for step in self._steps],
            "logs": [entry.model_dump(mode="json") for entry in self._logs],
        }

    async def _record(self) -> None:
        try:
            await workflow.execute_activity_method(
                ChainActivities.record_steps,
                StepsRecord(
                    workflow_id=self._input.workflow_id,
                    run_id=self._input.run_id,
                    steps=self._steps,
                ),
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )
        except Exception as error:  # the live view lags; the final record has the steps
            if is_cancelled_exception(error):
                raise ChainCancelled() from None
            workflow.logger.warning("steps not written: %s", error)


@workflow.defn(name=CHAIN_STEP_WORKFLOW)
class ChainStepWorkflow:
    """One action step of a chain: its action's activity, with the task's retries."""

    @workflow.run
    async def run(self, step: ChainStepRun) -> ActionOutcome:
        route = ACTION_ROUTES[step.action.action.type]
        queue = workflow.info().task_queue
        if route.queue == "code":
            queue = code_queue(queue)
        outcome: ActionOutcome = await workflow.execute_activity(
            route.activity,
            step.action,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=step.timeout_seconds),
            heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
            retry_policy=retry_policy_for(step.action.retry),
            result_type=ActionOutcome,
        )
        return outcome
