"""``RetentionWorkflow``: the daily system run that trims execution history."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from schema.temporal_ids import RETENTION_WORKFLOW

# A run whose record still says running this long after it started is checked in Temporal.
UNRECORDED_AFTER_SECONDS = 900


@workflow.defn(name=RETENTION_WORKFLOW)
class RetentionWorkflow:
    """Settle the records of runs that ended unrecorded, then delete executions older than
    the retention period."""

    @workflow.run
    async def run(self, retention_days: int) -> int:
        await workflow.execute_activity_method(
            HistoryActivities.settle_unrecorded_executions,
            UNRECORDED_AFTER_SECONDS,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
        )
        deleted: int = await workflow.execute_activity_method(
            HistoryActivities.delete_old_executions,
            retention_days,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
        )
        return deleted
