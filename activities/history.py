"""History activities: idempotent writes of execution records and the task's summary fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from schema import crud
from schema.crud import UNCHANGED
from schema.executions import ExecutionError, ExecutionFinished, ExecutionStarted, ExecutionStatus
from schema.orm import Task, TaskExecution

RETENTION_BATCH = 1000
STALE_BATCH = 500
# Runs that ended without recording their end (terminated, timed out as a workflow): the
# status their final record gets, and the error it shows.
UNRECORDED_ENDS: dict[WorkflowExecutionStatus, tuple[ExecutionStatus, str, str]] = {
    WorkflowExecutionStatus.TERMINATED: ("cancelled", "Terminated", "terminated in Temporal"),
    WorkflowExecutionStatus.CANCELED: ("cancelled", "Cancelled", "cancelled in Temporal"),
    WorkflowExecutionStatus.TIMED_OUT: ("timed_out", "WorkflowTimeout", "the run timed out"),
    WorkflowExecutionStatus.FAILED: ("failed", "WorkflowFailed", "the run failed in Temporal"),
}


def schedule_id_for(task_id: object) -> str:
    return f"task-{task_id}"


class HistoryActivities:
    """Activities that need the database and the Temporal client of the worker process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: Client) -> None:
        self.sessions = sessions
        self.client = client

    @activity.defn
    async def record_execution_started(self, record: ExecutionStarted) -> None:
        """Insert the running row (a no-op when the run is already recorded)."""
        async with self.sessions.begin() as session:
            if await session.get(Task, record.task_id) is None:
                activity.logger.info("task %s is gone; not recording", record.task_id)
                return
            await crud.record_started(session, record)

    @activity.defn
    async def record_execution_finished(self, record: ExecutionFinished) -> None:
        """Write the final row; the first time only, move the task's counters and status."""
        finishes_task = record.task_type == "one_time" and record.trigger == "schedule"
        # Only a scheduled run moves the schedule on; other runs leave next_run_at as it is.
        moves_schedule = record.trigger == "schedule" and not finishes_task
        next_run_at = await self._next_run_at(record) if moves_schedule else None
        async with self.sessions.begin() as session:
            if await session.get(Task, record.task_id) is None:
                activity.logger.info("task %s is gone; not recording", record.task_id)
                return
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
        if finishes_task:
            await self._delete_schedule(schedule_id_for(record.task_id))

    async def _next_run_at(self, record: ExecutionFinished) -> datetime | None:
        try:
            description = await self.client.get_schedule_handle(
                schedule_id_for(record.task_id)
            ).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        if description.schedule.state.paused:
            return None
        times = description.info.next_action_times
        return times[0] if times else None

    async def _delete_schedule(self, schedule_id: str) -> None:
        try:
            await self.client.get_schedule_handle(schedule_id).delete()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise

    @activity.defn
    async def delete_old_executions(self, retention_days: int) -> int:
        """Delete executions older than the retention period, in batches; returns the count."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
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
            tasks = {row.task_id: await session.get(Task, row.task_id) for row in stale}
        settled = 0
        for row in stale:
            task = tasks[row.task_id]
            record = await self._unrecorded_end(row, task)
            if record is not None:
                await self.record_execution_finished(record)
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
        )
