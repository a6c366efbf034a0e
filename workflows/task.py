"""``TaskWorkflow``: one run of a task, from the running record to the final one.

Runs in flight outlive deployments: change this module only in replay-safe ways (a new
path behind ``workflow.patched``, input fields added with defaults) and keep the replay
test (tests/workflows/test_replay.py) green.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType, ActivityHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from schema.actions import ACTION_ROUTES, STORED
    from schema.chains import CHAIN_WORKFLOW, TaskChainAction, chain_workflow_id
    from schema.conditions import condition_paths
    from schema.executions import (
        ActionContext,
        ActionInput,
        ActionOutcome,
        ChainInput,
        ExecutionError,
        ExecutionFinished,
        ExecutionStarted,
        LastExecutionQuery,
        LogEntry,
        NotifyInput,
    )
    from schema.tasks import RunRef, TaskRunInput
    from schema.temporal_ids import (
        SCHEDULED_START_ATTRIBUTE,
        TASK_ID_ATTRIBUTE,
        TASK_WORKFLOW,
        USER_ID_ATTRIBUTE,
        code_queue,
        record_workflow_id,
        search_attributes,
        wait_queue,
    )
    from workflows.conditions import condition_context, evaluate
    from workflows.failures import Failure, failure_from, retry_policy_for
    from workflows.history import RecordExecutionWorkflow
    from workflows.notify import NOTIFY_WORKFLOW, notify_workflow_id

# Each patch marks a path that runs from before it took differently; the normal path meets
# none of them, so it records no marker.
# Notifications go to a NotifyWorkflow the run does not wait for (runs before sent them).
NOTIFY_IN_CHILD = "notify-in-child"
# Runs from before it let a cancellation interrupt their final record.
RECORD_THROUGH_CANCELLATION = "record-through-cancellation"
# Runs from before it dropped an action's result that arrived with a cancellation.
KEEP_LATE_RESULT = "keep-result-on-late-cancel"
# A cancelled action reports its log (as a `Cancelled` failure) and the run waits for it.
CANCEL_KEEPS_LOGS = "cancel-keeps-action-logs"
# The running record retries until the database is back (nothing waits for it).
HISTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
HISTORY_TIMEOUT = timedelta(seconds=30)
# The end of a run waits for its running record at most this long; a database that is down
# fails it at once (``DatabaseUnavailable``).
RUNNING_RECORD_BOUND = timedelta(seconds=60)
# The final record within the run is bounded: a database outage must never hold a run open
# (under the default overlap policy `skip`, an open run makes the schedule skip its fires).
FINAL_RECORD_ATTEMPT = timedelta(seconds=30)
FINAL_RECORD_BOUND = timedelta(seconds=60)
FINAL_RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
# Actions heartbeat every few seconds; silence this long means the worker died: retry.
ACTION_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# A run queued behind others (run now under a buffer policy) waits at most this long.
WAIT_LIMIT = timedelta(days=7)
MAX_PROBLEM_CHARS = 1000
# A condition reading `last` asks the database for it, briefly: when the database is down,
# `last` is missing (the condition decides with that) rather than the run waiting.
LAST_EXECUTION_BOUND = timedelta(seconds=10)
NOTIFY_TIMEOUT = timedelta(seconds=60)
NOTIFY_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=2))


class ChainEnded(Exception):
    """A chain that failed or was cancelled, as its execution records it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error.message)
        self.failure = failure


@workflow.defn(name=TASK_WORKFLOW)
class TaskWorkflow:
    """Record the run as running, run the action with the task's retries, record the outcome.

    The input is read here rather than by the SDK, so that a run that starts with an input
    this code cannot read (a schedule written by another version, say) fails visibly,
    recorded as ``InvalidRunInput``, instead of failing its workflow task over and over.
    (A run already in flight whose input a deploy made unreadable cannot be saved this way:
    its history would no longer replay. Hence inputs only ever gain fields.)"""

    def __init__(self) -> None:
        self._cancelled = False
        self._steps: list[dict[str, Any]] = []

    @workflow.run
    async def run(self, raw: RawValue) -> dict[str, Any]:
        run, problem = _decode(raw)
        if run is None:
            await self._record_unreadable(problem or "unreadable input")
            raise ApplicationError(
                f"InvalidRunInput: {problem}", type="InvalidRunInput", non_retryable=True
            )
        info = workflow.info()
        generated = workflow.uuid4()  # always drawn: runs in flight replay the same
        started = ExecutionStarted(
            # A reset run has the same input: it must not take the first run's execution.
            execution_id=run.execution_id
            if run.execution_id and info.run_id == info.first_execution_run_id
            else generated,
            task_id=run.task_id,
            user_id=run.user_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            trigger=run.trigger,
            scheduled_at=run.scheduled_at
            or info.typed_search_attributes.get(SCHEDULED_START_ATTRIBUTE),
            started_at=info.start_time,
            logs=_queue_log(run.wait_for),
            rerun_of=run.rerun_of,
        )
        recording = workflow.start_activity_method(
            HistoryActivities.record_execution_started,
            started,
            start_to_close_timeout=HISTORY_TIMEOUT,
            schedule_to_close_timeout=RUNNING_RECORD_BOUND,
            retry_policy=HISTORY_RETRY,
        )
        outcome: ActionOutcome | None = None
        failure: Failure | None = None
        skipped: str | None = None
        try:
            if run.wait_for:
                await self._wait(run.wait_for)
            # Runs from before conditions existed have none: they take no new step here.
            if run.task.condition is not None:
                skipped = await self._condition_fails(run, started)
            if skipped is None:
                outcome = await self._run_action(run, started)
        except (ActivityError, asyncio.CancelledError) as error:
            failure = failure_from(error, run.task.retry)
            if self._cancelled and failure.status != "cancelled":
                # Cancelled while its worker was gone, say (it then times out): still the
                # user's cancellation, with the log it had.
                failure = Failure(
                    "cancelled",
                    ExecutionError(type="Cancelled", message="cancelled"),
                    failure.attempts,
                    failure.logs,
                )
        except ChainEnded as ended:
            failure = ended.failure
        record = self._finished(run, started, outcome, failure, skipped)
        await self._settle_running_record(recording)
        await self._record(record)
        # Only tasks with a recipient notify, and none could before notifications existed.
        if run.task.notify.wants(record.status):
            await self._notify(run, record)
        if failure is not None:
            if failure.status == "cancelled":
                raise asyncio.CancelledError()
            # Fail the workflow too, so the Temporal Web UI shows the run as failed.
            raise ApplicationError(
                f"{failure.error.type}: {failure.error.message}",
                type=failure.error.type,
                non_retryable=True,
            )
        # Not the action's result: that is in the activity's result and the final record
        # already (the completion's payload is not compared on replay).
        returned: dict[str, Any] = {
            "execution_id": str(started.execution_id),
            "status": record.status,
        }
        if run.trigger == "chain":  # a chain's task step: its output carries the result
            returned["result"] = record.result
        return returned

    async def _settle_running_record(self, recording: ActivityHandle[None]) -> None:
        """Let the running record land before the final one, as the database allows: it
        gives up at once when the database is down. A cancellation arriving meanwhile comes
        too late to stop anything: the outcome is recorded, and the run ends as it went."""
        try:
            await asyncio.shield(recording)
        except ActivityError:
            pass  # the database is down or slow: the final record says it all
        except asyncio.CancelledError:
            if not workflow.patched(RECORD_THROUGH_CANCELLATION):
                recording.cancel()  # a run from before: the cancellation ended it here
                await workflow.wait([recording])
                raise

    async def _condition_fails(self, run: TaskRunInput, started: ExecutionStarted) -> str | None:
        """None when the task's condition holds, else why it does not (the run is then
        recorded as skipped)."""
        condition = run.task.condition
        assert condition is not None
        last: dict[str, Any] | None = None
        if any(path.split(".")[0] == "last" for path in condition_paths(condition)):
            try:
                last = await workflow.execute_local_activity_method(
                    HistoryActivities.last_execution,
                    LastExecutionQuery(
                        task_id=run.task_id,
                        workflow_id=started.workflow_id,
                        before=started.started_at,
                    ),
                    schedule_to_close_timeout=LAST_EXECUTION_BOUND,
                    retry_policy=FINAL_RECORD_RETRY,
                )
            except ActivityError as error:
                workflow.logger.warning("previous execution not read (%s): last is missing", error)
        schedule = run.task.schedule
        context = condition_context(
            now=workflow.now(),
            timezone=schedule.timezone if schedule else "UTC",
            payload=run.payload,
            last=last,  # None (no previous run): every path under it is missing
            steps=None,
        )
        held, reason = evaluate(condition, context)
        return None if held else reason

    async def _notify(self, run: TaskRunInput, record: ExecutionFinished) -> None:
        """Tell the task's recipients, after the final record: never the run's outcome.
        A workflow of their own sends them, so the run ends without waiting for them."""
        notice = NotifyInput(
            task_id=run.task_id,
            task_name=run.task.name,
            execution_id=record.execution_id,
            workflow_id=record.workflow_id,
            run_id=record.run_id,
            trigger=record.trigger,
            status=record.status,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            notify=run.task.notify,
        )
        if workflow.patched(NOTIFY_IN_CHILD):
            try:
                await workflow.start_child_workflow(
                    NOTIFY_WORKFLOW,
                    notice,
                    id=notify_workflow_id(record.run_id),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    search_attributes=search_attributes(run.task_id, run.user_id),
                )
            except Exception as error:  # never the run's outcome
                workflow.logger.warning("notifications not started: %s", error)
            return
        try:  # a run from before: it sent them itself
            await workflow.execute_activity(
                "notify_run",
                notice,
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning("notification failed: %s", error)

    async def _wait(self, runs: list[RunRef]) -> None:
        await workflow.execute_activity_method(
            HistoryActivities.wait_for_runs,
            runs,
            task_queue=wait_queue(workflow.info().task_queue),
            start_to_close_timeout=WAIT_LIMIT,
            schedule_to_close_timeout=WAIT_LIMIT,
            heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
            retry_policy=HISTORY_RETRY,
        )

    async def _run_action(self, run: TaskRunInput, started: ExecutionStarted) -> ActionOutcome:
        if isinstance(run.task.action, TaskChainAction):  # no run from before chains has one
            return await self._run_chain(run, started, run.task.action)
        route = ACTION_ROUTES[run.task.action.type]
        queue = workflow.info().task_queue
        if route.queue == "code":
            queue = code_queue(queue)
        action_input = ActionInput(
            user_id=run.user_id,
            workflow_id=started.workflow_id,
            run_id=started.run_id,
            action=run.task.action,
            retry=run.task.retry,
            context=ActionContext(
                task_id=run.task_id,
                task_name=run.task.name,
                trigger=run.trigger,
                scheduled_at=started.scheduled_at,
                payload=run.payload,
            ),
        )
        action = workflow.start_activity(
            route.activity,
            action_input,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=run.task.timeout_seconds),
            heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
            retry_policy=retry_policy_for(run.task.retry),
            result_type=ActionOutcome,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            if workflow.patched(CANCEL_KEEPS_LOGS)
            else ActivityCancellationType.TRY_CANCEL,
        )
        outcome: ActionOutcome
        try:
            outcome = await asyncio.shield(action)
        except asyncio.CancelledError:
            # An action still running is cancelled, and ends `cancelled` with its logs; one
            # that finished as the cancellation arrived keeps its result.
            if not action.done():
                action.cancel()
                self._cancelled = True
            elif not workflow.patched(KEEP_LATE_RESULT):
                raise
            outcome = await action
        return outcome

    async def _run_chain(
        self, run: TaskRunInput, started: ExecutionStarted, action: TaskChainAction
    ) -> ActionOutcome:
        """The chain as a child ``ChainWorkflow``; a cancellation cancels its running step,
        and the steps it reached are kept either way."""
        schedule = run.task.schedule
        chain = await workflow.start_child_workflow(
            CHAIN_WORKFLOW,
            ChainInput(
                execution_id=started.execution_id,
                task_id=run.task_id,
                user_id=run.user_id,
                task_name=run.task.name,
                workflow_id=started.workflow_id,
                run_id=started.run_id,
                trigger=run.trigger,
                scheduled_at=started.scheduled_at,
                payload=run.payload,
                timezone=schedule.timezone if schedule else "UTC",
                retry=run.task.retry,
                timeout_seconds=run.task.timeout_seconds,
                config=action.config,
                depth=run.depth,
            ),
            id=chain_workflow_id(started.execution_id),
            search_attributes=search_attributes(run.task_id, run.user_id),
        )
        try:
            try:
                returned = await asyncio.shield(chain)
            except asyncio.CancelledError:
                self._cancelled = True
                chain.cancel()
                returned = await chain
        except ChildWorkflowError as error:
            cause = error.cause
            details = cause.details if isinstance(cause, ApplicationError) else ()
            if details and isinstance(details[0], dict):
                self._steps = list(details[0].get("steps", []))
            raise ChainEnded(failure_from(cause or error, run.task.retry)) from None
        self._steps = list(returned.get("steps", []))
        logs = [LogEntry.model_validate(entry) for entry in returned.get("logs", [])]
        return ActionOutcome(result=returned.get("result"), logs=logs)

    def _finished(
        self,
        run: TaskRunInput,
        started: ExecutionStarted,
        outcome: ActionOutcome | None,
        failure: Failure | None,
        skipped: str | None = None,
    ) -> ExecutionFinished:
        logs: list[LogEntry] = list(started.logs)
        if skipped is not None and failure is None:
            logs.append(LogEntry(at=workflow.now(), message=f"skipped: {skipped}"))
        logs += outcome.logs if outcome else (failure.logs if failure else [])
        if failure is not None and failure.error.type == "ActivityTimeout":
            logs.append(
                LogEntry(
                    at=workflow.now(),
                    level="error",
                    message=f"attempt {failure.attempts} ended without a result: "
                    f"{failure.error.message} (its worker may have stopped)",
                )
            )
        schedule = run.task.schedule
        return ExecutionFinished(
            **started.model_dump(exclude={"logs"}),
            task_type=run.task.type,
            status=failure.status if failure else ("skipped" if skipped else "succeeded"),
            finished_at=workflow.now(),
            attempts=failure.attempts if failure else (outcome.attempt if outcome else 0),
            result=outcome.result if outcome else None,
            error=failure.error
            if failure
            else (ExecutionError(type="ConditionNotMet", message=skipped) if skipped else None),
            logs=logs,
            run_at=schedule.run_at if schedule and run.task.type == "one_time" else None,
            depth=run.depth,
            steps=self._steps,
        )

    async def _record(self, record: ExecutionFinished) -> None:
        """Write the final record. A cancellation arriving meanwhile waits for it: the
        record of what happened is never dropped."""
        writing = asyncio.create_task(self._write_or_hand_over(record))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            if not workflow.patched(RECORD_THROUGH_CANCELLATION):
                writing.cancel()  # a run from before: the cancellation stopped its record
                await workflow.wait([writing])
                raise
            workflow.logger.info("cancellation received while recording; recording first")
            await writing

    async def _write_or_hand_over(self, record: ExecutionFinished) -> None:
        """Write the record within a minute, or hand it to a workflow that outlives this run
        and retries until the database is back."""
        try:
            await workflow.execute_local_activity_method(
                HistoryActivities.record_execution_finished,
                record,
                start_to_close_timeout=FINAL_RECORD_ATTEMPT,
                schedule_to_close_timeout=FINAL_RECORD_BOUND,
                retry_policy=FINAL_RECORD_RETRY,
            )
        except FailureError as error:  # as ActivityError, or its cause, or a timeout
            if is_cancelled_exception(error):
                raise
            record_id = record_workflow_id(workflow.info().run_id)
            workflow.logger.warning("final record handed to %s: %s", record_id, error)
            await workflow.start_child_workflow(
                RecordExecutionWorkflow.run,
                record,
                id=record_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=search_attributes(record.task_id, record.user_id),
            )

    async def _record_unreadable(self, problem: str) -> None:
        """Record a run whose input cannot be read, when the search attributes say whose."""
        info = workflow.info()
        attributes = info.typed_search_attributes
        task_id, user_id = attributes.get(TASK_ID_ATTRIBUTE), attributes.get(USER_ID_ATTRIBUTE)
        if not task_id or not user_id:
            return
        scheduled_at = attributes.get(SCHEDULED_START_ATTRIBUTE)
        try:
            record = ExecutionFinished(
                execution_id=workflow.uuid4(),
                task_id=task_id,
                user_id=user_id,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                trigger="schedule" if scheduled_at else "manual",
                scheduled_at=scheduled_at,
                started_at=info.start_time,
                task_type=None,
                status="failed",
                finished_at=workflow.now(),
                attempts=0,
                error=ExecutionError(type="InvalidRunInput", message=problem),
            )
        except ValueError:  # attributes set by hand, not ids: nothing to record against
            return
        await self._record(record)


def _decode(raw: RawValue) -> tuple[TaskRunInput | None, str | None]:
    """The run's input, read as stored (``STORED``): checks added to configs since it was
    written do not make it unreadable; the action validates its config again."""
    try:
        if raw.payload.metadata.get("encoding") == b"json/plain":
            run = TaskRunInput.model_validate_json(raw.payload.data, context=STORED)
        else:
            run = workflow.payload_converter().from_payload(raw.payload, TaskRunInput)
    except Exception as error:  # any reason at all: the run fails visibly, once
        return None, f"the run's input cannot be read: {type(error).__name__}: {error}"[
            :MAX_PROBLEM_CHARS
        ]
    assert isinstance(run, TaskRunInput)
    return run, None


def _queue_log(wait_for: list[RunRef]) -> list[LogEntry]:
    if not wait_for:
        return []
    names = ", ".join(ref.workflow_id for ref in wait_for)
    message = f"queued by the overlap policy behind {len(wait_for)} run(s) in flight: {names}"
    return [LogEntry(at=workflow.now(), message=message)]
