"""``RecordExecutionWorkflow``: a run's final record, written once the database is back.

A ``TaskWorkflow`` that cannot write its final record within a minute starts this as a child
that outlives it (``ParentClosePolicy.ABANDON``) and ends, so a database outage never holds
runs open. The write is idempotent and moves the task's counters exactly once.

The record (the action's result with it) is this workflow's input, so its activity reads it
from there rather than being handed it again: one more copy in Temporal per attempt's
schedule would be one too many.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from schema.executions import ExecutionFinished
    from schema.temporal_ids import RECORD_EXECUTION_WORKFLOW

# No attempt limit: the record waits for the database as long as it takes.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
RECORD_TIMEOUT = timedelta(seconds=60)
# Runs from before it passed their record to the activity (a second copy of the result).
READ_RECORD_FROM_START = "read-record-from-start"


@workflow.defn(name=RECORD_EXECUTION_WORKFLOW)
class RecordExecutionWorkflow:
    """Write one final execution record, retrying until the database answers."""

    @workflow.run
    async def run(self, record: ExecutionFinished) -> None:
        if workflow.patched(READ_RECORD_FROM_START):
            # No argument: the activity reads the record from this workflow's start.
            await workflow.execute_activity(
                "write_execution_record",
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )
            return
        await workflow.execute_activity_method(
            HistoryActivities.write_execution_record,
            record,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
