"""``TaskWorkflow``: one run of a task, from the running record to the final one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from activities.registry import ACTIONS
    from schema.executions import (
        ActionContext,
        ActionInput,
        ActionOutcome,
        ExecutionFinished,
        ExecutionStarted,
        LogEntry,
    )
    from schema.tasks import TaskRunInput
    from workflows.failures import Failure, failure_from, retry_policy_for

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
CODE_QUEUE_SUFFIX = "-code"
# History writes retry until the database is back: an outage delays history, never loses it.
HISTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
HISTORY_TIMEOUT = timedelta(seconds=30)
# Actions heartbeat every few seconds; silence this long means the worker died: retry.
ACTION_HEARTBEAT_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class TaskWorkflow:
    """Record the run as running, run the action with the task's retries, record the outcome."""

    @workflow.run
    async def run(self, run: TaskRunInput) -> dict[str, Any]:
        info = workflow.info()
        started = ExecutionStarted(
            execution_id=workflow.uuid4(),
            task_id=run.task_id,
            user_id=run.user_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            trigger=run.trigger,
            scheduled_at=run.scheduled_at or info.typed_search_attributes.get(SCHEDULED_START),
            started_at=info.start_time,
        )
        recording = workflow.start_activity_method(
            HistoryActivities.record_execution_started,
            started,
            start_to_close_timeout=HISTORY_TIMEOUT,
            retry_policy=HISTORY_RETRY,
        )
        outcome: ActionOutcome | None = None
        failure: Failure | None = None
        try:
            outcome = await self._run_action(run, started)
        except (ActivityError, asyncio.CancelledError) as error:
            failure = failure_from(error, run.task.retry)
        await recording
        await self._record(run, started, outcome, failure)
        if failure is not None:
            if failure.status == "cancelled":
                raise asyncio.CancelledError()
            # Fail the workflow too, so the Temporal Web UI shows the run as failed.
            raise ApplicationError(
                f"{failure.error.type}: {failure.error.message}",
                type=failure.error.type,
                non_retryable=True,
            )
        assert outcome is not None
        return {"execution_id": str(started.execution_id), "result": outcome.result}

    async def _run_action(self, run: TaskRunInput, started: ExecutionStarted) -> ActionOutcome:
        entry = ACTIONS[run.task.action.type]
        queue = workflow.info().task_queue
        if entry.queue == "code":
            queue += CODE_QUEUE_SUFFIX
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
        outcome: ActionOutcome = await workflow.execute_activity(
            entry.name,
            action_input,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=run.task.timeout_seconds),
            heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
            retry_policy=retry_policy_for(run.task.retry),
            result_type=ActionOutcome,
        )
        return outcome

    async def _record(
        self,
        run: TaskRunInput,
        started: ExecutionStarted,
        outcome: ActionOutcome | None,
        failure: Failure | None,
    ) -> None:
        finished_at: datetime = workflow.now()
        logs: list[LogEntry] = outcome.logs if outcome else (failure.logs if failure else [])
        record = ExecutionFinished(
            **started.model_dump(),
            task_type=run.task.type,
            status=failure.status if failure else "succeeded",
            finished_at=finished_at,
            attempts=failure.attempts if failure else (outcome.attempt if outcome else 0),
            result=outcome.result if outcome else None,
            error=failure.error if failure else None,
            logs=logs,
        )
        # A local activity: the final write is awaited anyway, and this saves the server an
        # activity task and a workflow task per run (its SQLite file is the bottleneck).
        await workflow.execute_local_activity_method(
            HistoryActivities.record_execution_finished,
            record,
            start_to_close_timeout=HISTORY_TIMEOUT,
            retry_policy=HISTORY_RETRY,
        )
