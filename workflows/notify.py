"""``NotifyWorkflow``: a run's notifications, sent after its final record by a workflow of
their own, so that a slow mail server or webhook never holds the run open (under the
overlap policy `skip`, an open run makes its schedule skip fires).

``TaskWorkflow`` starts it with ``ParentClosePolicy.ABANDON`` and ends without waiting.
Change it only in replay-safe ways, like every workflow here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schema.executions import NotifyInput

NOTIFY_WORKFLOW = "NotifyWorkflow"
NOTIFY_TIMEOUT = timedelta(seconds=60)
# Each channel is tried once per attempt, and a failure is logged on the execution: a
# second attempt only covers the activity itself failing (its worker gone, say).
NOTIFY_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=2))


def notify_workflow_id(run_id: str) -> str:
    return f"cronpilot-notify-{run_id}"


@workflow.defn(name=NOTIFY_WORKFLOW)
class NotifyWorkflow:
    @workflow.run
    async def run(self, notice: NotifyInput) -> dict[str, Any]:
        sent: dict[str, Any] = await workflow.execute_activity(
            "notify_run",
            notice,
            start_to_close_timeout=NOTIFY_TIMEOUT,
            retry_policy=NOTIFY_RETRY,
            result_type=dict,
        )
        return sent
