"""``RetentionWorkflow``: the daily system run that trims execution history."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities

RETENTION_SCHEDULE_ID = "cronpilot-retention"


@workflow.defn
class RetentionWorkflow:
    """Delete executions older than the retention period."""

    @workflow.run
    async def run(self, retention_days: int) -> int:
        deleted: int = await workflow.execute_activity_method(
            HistoryActivities.delete_old_executions,
            retention_days,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
        )
        return deleted
