"""History activities: idempotent writes of execution records and the task's summary fields,
the system sweep of runs that ended unrecorded, and waiting for runs in flight.

A run never waits long on the database: ``record_execution_finished`` fails at once, and
for good, when the database is unreachable (or was a moment ago), and the workflow then
hands its record to a ``RecordExecutionWorkflow`` that retries ``write_execution_record``
until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import scheduling, triggers
from schema import crud
from schema.crud import UNCHANGED
from schema.db import is_unavailable
from schema.executions import (
    ExecutionError,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionStatus,
    LastExecutionQuery,
    LogEntry,
)
from schema.orm import Task, TaskExecution
from schema.tasks import RunRef
from schema.triggers import MAX_EVENT_DEPTH

RETENTION_BATCH = 1000
STALE_BATCH = 500
# After a failed connection, writes fail at once for this long instead of each waiting out
# a connection timeout: runs keep ending on time during an outage.
UNAVAILABLE_FOR_SECONDS = 5.0
WAIT_POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
# Runs that ended without recording their end (terminated, timed out as a workflow): the
# status their final record gets, and the error it shows.
UNRECORDED_ENDS: dict[WorkflowExecutionStatus, tuple[ExecutionStatus, str, str]] = {
    WorkflowExecutionStatus.TERMINATED: ("cancelled", "Terminated", "terminated in Temporal"),
    WorkflowExecutionStatus.CANCELED: ("cancelled", "Cancelled", "cancelled in Temporal"),
    WorkflowExecutionStatus.TIMED_OUT: ("timed_out", "WorkflowTimeout", "the run timed out"),
    WorkflowExecutionStatus.FAILED: ("failed", "WorkflowFailed", "the run failed in Temporal"),
}


class HistoryActivities:
    """Activities that need the database and the Temporal client of the worker process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: Client) -> None:
        self.sessions = sessions
        self.client = client
        self._unavailable_until = 0.0

    @activity.defn
    async def record_execution_started(self, record: ExecutionStarted) -> None:
        """Insert the running row (a no-op when the run is already recorded); fails at once
        and for good (``DatabaseUnavailable``) when the database cannot be reached, since
        the final record, written or handed over later, makes it moot."""
        async with self._now_or_never(), self.sessions.begin() as session:
            if await session.get(Task, record.task_id) is None:
                activity.logger.info("task %s is gone; not recording", record.task_id)
                return
            await crud.record_started(session, record)

    @activity.defn
    async def last_execution(self, ask: LastExecutionQuery) -> dict[str, Any] | None:
        """The task's previous execution (``status`` and ``result``), for a condition that
        reads ``last``; None when it has none. Fails at once when the database is down."""
        async with self._now_or_never(), self.sessions() as session:
            found = await crud.last_finished(
                session, task_id=ask.task_id, before=ask.before, workflow_id=ask.workflow_id
            )
        if found is None:
            return None
        return {"status": found.status, "result": found.result, "error": found.error}

    @activity.defn
    async def record_execution_finished(self, record: ExecutionFinished) -> None:
        """The final record, written within the run: fails at once and non-retryably
        (``DatabaseUnavailable``) when the database cannot be reached."""
        async with self._now_or_never():
            await self.write_execution_record(record)

    @activity.defn
    async def write_execution_record(self, record: ExecutionFinished | None = None) -> None:
        """Write the final row; the first time only, move the task's counters and status.
        A one-time task's scheduled run completes (or fails) the task, unless the task was
        given a new run_at meanwhile, and then its spent schedule is deleted.

        Without ``record`` (as a ``RecordExecutionWorkflow`` calls it), the record is read
        from the start of the calling workflow, which holds it already: passed again, the
        action's result would be stored in Temporal once more."""
        if record is None:
            record = await self._handed_over_record()
        finishing = record.task_type == "one_time" and record.trigger == "schedule"
        # Only a scheduled run moves the schedule on; other runs leave next_run_at as it is.
        moves_schedule = record.trigger == "schedule" and record.task_type == "recurring"
        next_run_at = (
            await scheduling.next_run_at(self.client, record.task_id) if moves_schedule else None
        )
        async with self._database():
            try:
                written = await self._write(record, finishing, moves_schedule, next_run_at)
            except IntegrityError:
                # Its task was deleted between the look-up and the write (the foreign key
                # refused it): nothing to record against, as when it was gone before.
                async with self.sessions() as session:
                    if await session.get(Task, record.task_id) is not None:
                        raise
                activity.logger.info("task %s is gone; not recording", record.task_id)
                return
            if not written:
                return
            if finishing:
                await self._delete_spent_schedule(record)
        if record.status in ("succeeded", "failed", "timed_out") and record.task_type is not None:
            await self._emit(record)

    async def _write(
        self,
        record: ExecutionFinished,
        finishing: bool,
        moves_schedule: bool,
        next_run_at: datetime | None,
    ) -> bool:
        """The final row and the task's counters; False when the task is gone."""
        async with self.sessions.begin() as session:
            # Only a run that may finish its task must go one at a time with the task's
            # changes (a new run_at keeps it active); counters move atomically anyway.
            if finishing:
                task = await crud.lock_task(session, task_id=record.task_id)
            else:
                task = await session.get(Task, record.task_id)
            if task is None:
                activity.logger.info("task %s is gone; not recording", record.task_id)
                return False
            finishes_task = finishing and _same_run_at(task, record)
            if await crud.record_finished(session, record):
                task_status = None
                if finishes_task:
                    task_status = "completed" if record.status == "succeeded" else "failed"
                await crud.count_run(
                    session,
                    task_id=record.task_id,
                    status=record.status,
                    finished_at=record.finished_at,
                    task_status=task_status,
                    next_run_at=next_run_at if moves_schedule or finishes_task else UNCHANGED,
                )
        return True

    async def _emit(self, record: ExecutionFinished) -> None:
        """The run's built-in event (``task.succeeded``, or ``task.failed`` for a failed or
        timed-out run) to the user's other event-trigger tasks. Idempotent, so a retry of
        this activity emits it again safely: the event's id is the execution's, and each
        task runs a delivery id once. An event too deep in a chain of events starts
        nothing, and says so in this run's log."""
        name = "task.succeeded" if record.status == "succeeded" else "task.failed"
        async with self.sessions.begin() as session:
            task = await session.get(Task, record.task_id)
            if task is None:
                return
            payload = {
                "task_id": str(record.task_id),
                "task_name": task.name,
                "execution_id": str(record.execution_id),
                "status": record.status,
                "result": record.result,
                "error": record.error.model_dump() if record.error else None,
            }
            outcome = await triggers.deliver_event(
                session,
                self.client,
                activity.info().task_queue,
                user_id=record.user_id,
                name=name,
                payload=payload,
                event_id=f"run:{record.execution_id}",
                depth=record.depth + 1,
                # A task is not started by its own run's event: that would be a loop.
                exclude=record.task_id,
            )
            if outcome.refused:
                message = (
                    f"event {name} not delivered to {len(outcome.refused)} task(s) "
                    f"({', '.join(outcome.refused)}): it would start a run "
                    f"{record.depth + 1} events deep, over the limit of {MAX_EVENT_DEPTH}"
                )
                activity.logger.warning(message)
                await crud.append_log(
                    session,
                    workflow_id=record.workflow_id,
                    run_id=record.run_id,
                    entry=LogEntry(at=datetime.now(UTC), level="warning", message=message),
                )

    async def _handed_over_record(self) -> ExecutionFinished:
        """The input of the workflow this activity runs for (a RecordExecutionWorkflow)."""
        info = activity.info()
        if info.workflow_id is not None:
            handle = self.client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
            async for event in handle.fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [record] = await self.client.data_converter.decode(payloads, [ExecutionFinished])
                assert isinstance(record, ExecutionFinished)
                return record
        message = "no record given, and no workflow whose input it is"
        raise ApplicationError(message, type="RecordNotFound", non_retryable=True)

    async def _delete_spent_schedule(self, record: ExecutionFinished) -> None:
        """Delete a finished one-time task's schedule, under the row lock, unless the task
        was rescheduled meanwhile (also on a retry, after the row was written)."""
        async with self.sessions.begin() as session:
            task = await crud.lock_task(session, task_id=record.task_id)
            if task is not None and task.status in ("completed", "failed"):
                if _same_run_at(task, record):
                    await scheduling.delete_schedule(self.client, record.task_id)

    @contextlib.asynccontextmanager
    async def _now_or_never(self) -> AsyncIterator[None]:
        """For the writes a run waits for: fail at once, and for good (a non-retryable
        ``DatabaseUnavailable``), while the database cannot be reached."""
        if time.monotonic() < self._unavailable_until:
            raise _unavailable("the database did not answer a moment ago")
        try:
            async with self._database():
                yield
        except Exception as error:
            if is_unavailable(error):
                raise _unavailable(f"{type(error).__name__}: {error}") from error
            raise

    @contextlib.asynccontextmanager
    async def _database(self) -> AsyncIterator[None]:
        """Notes a connection failure, so that in-run writes fail fast for a while."""
        try:
            yield
        except Exception as error:
            if is_unavailable(error):
                self._unavailable_until = time.monotonic() + UNAVAILABLE_FOR_SECONDS
            raise

    @activity.defn
    async def wait_for_runs(self, runs: list[RunRef]) -> None:
        """Return once every run has ended (for a run queued by its overlap policy)."""
        pending = list(runs)
        while pending:
            activity.heartbeat(len(pending))
            still = []
            for run in pending:
                try:
                    described = await self.client.get_workflow_handle(
                        run.workflow_id, run_id=run.run_id
                    ).describe()
                except RPCError as error:
                    if error.status == RPCStatusCode.NOT_FOUND:
                        continue
                    raise
                if described.status == WorkflowExecutionStatus.RUNNING:
                    still.append(run)
            pending = still
            if pending:
                await asyncio.sleep(WAIT_POLL_SECONDS)

    @activity.defn
    async def delete_old_executions(self, retention_days: int) -> int:
        """Delete executions older than the retention period, in batches; returns the count.
        Expired webhook signature claims go too (they no longer refuse anything)."""
        now = datetime.now(UTC)
        while True:
            async with self.sessions.begin() as session:
                expired = await crud.delete_expired_signatures(
                    session, now=now, batch=RETENTION_BATCH
                )
            activity.heartbeat(0)
            if expired < RETENTION_BATCH:
                break
        cutoff = now - timedelta(days=retention_days)
        total = 0
        while True:
            async with self.sessions.begin() as session:
                deleted = await crud.delete_executions_before(
                    session, cutoff=cutoff, batch=RETENTION_BATCH
                )
            total += deleted
            activity.heartbeat(total)
            if deleted < RETENTION_BATCH:
                return total

    @activity.defn
    async def settle_unrecorded_executions(self, older_than_seconds: int) -> int:
        """Close the records of runs that ended in Temporal without recording their end
        (terminated by an overlap policy or by hand); returns how many were settled."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        async with self.sessions() as session:
            stale = await crud.running_executions_before(session, cutoff=cutoff, limit=STALE_BATCH)
        return await self.settle(stale)

    async def settle_runs(self, runs: Sequence[RunRef]) -> int:
        """Write the end of these runs if they ended without recording it (terminated)."""
        async with self.sessions() as session:
            rows = await crud.executions_of_runs(
                session, runs=[(run.workflow_id, run.run_id or "") for run in runs]
            )
        return await self.settle(rows)

    async def settle(self, rows: Sequence[TaskExecution]) -> int:
        """Write the end of each running row whose run ended unrecorded; returns how many."""
        async with self.sessions() as session:
            tasks = {row.task_id: await session.get(Task, row.task_id) for row in rows}
        settled = 0
        for row in rows:
            record = await self._unrecorded_end(row, tasks[row.task_id])
            if record is not None:
                await self.write_execution_record(record)
                settled += 1
        return settled

    async def _unrecorded_end(
        self, row: TaskExecution, task: Task | None
    ) -> ExecutionFinished | None:
        if task is None:
            return None
        try:
            description = await self.client.get_workflow_handle(
                row.workflow_id, run_id=row.run_id
            ).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        end = UNRECORDED_ENDS.get(description.status) if description.status else None
        if end is None:
            return None  # still running, or it completed and its own record is on the way
        status, error_type, message = end
        schedule = crud.task_spec(task).schedule
        return ExecutionFinished(
            execution_id=row.id,
            task_id=row.task_id,
            user_id=row.user_id,
            workflow_id=row.workflow_id,
            run_id=row.run_id,
            trigger=row.trigger,
            scheduled_at=row.scheduled_at,
            started_at=row.started_at,
            task_type=task.type,
            status=status,
            finished_at=description.close_time or datetime.now(UTC),
            attempts=row.attempts,
            error=ExecutionError(type=error_type, message=message),
            run_at=schedule.run_at if schedule else None,
        )


def _same_run_at(task: Task, record: ExecutionFinished) -> bool:
    """Whether the task still has the run_at its run was for (None: an older run's record,
    which carried no run_at)."""
    if record.run_at is None:
        return True
    schedule = crud.task_spec(task).schedule
    return schedule is not None and schedule.run_at == record.run_at


def _unavailable(message: str) -> ApplicationError:
    return ApplicationError(message, type="DatabaseUnavailable", non_retryable=True)
