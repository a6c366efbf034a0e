"""``EmailPollWorkflow``: one poll of an email-trigger task's mailbox.

The task's schedule (``task-{task_id}``, see ``api.scheduling.poll_schedule``) starts one
every ``poll_seconds``, never two at once. Its one activity, ``poll_mailbox``, hands each
new matching message to the task's ``TriggerWorkflow`` and marks it seen (see
``activities/email_trigger.py``); the runs themselves happen there. A poll that fails is
retried briefly when a retry could help, and otherwise waits for the next poll.

Polls in flight outlive deployments: change this module only in replay-safe ways (a new path
behind ``workflow.patched``, input fields added with defaults) and keep the replay test
(tests/workflows/test_replay.py) green.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schema.tasks import TriggerInput
    from schema.temporal_ids import EMAIL_POLL_WORKFLOW
    from workflows.trigger import decode_stored

# Fetching up to 50 messages (each up to a few MB) and delivering them, with room to spare.
POLL_TIMEOUT = timedelta(minutes=5)
# A few quick retries for what may pass (a dropped connection, Temporal busy); failures
# marked non-retryable (a refused login, a missing secret, a blocked address) are not
# retried at all: the next poll tries again.
POLL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
)


@workflow.defn(name=EMAIL_POLL_WORKFLOW)
class EmailPollWorkflow:
    """Poll the mailbox once; what ``poll_mailbox`` delivered is its result."""

    @workflow.run
    async def run(self, raw: RawValue) -> dict[str, Any]:
        start = decode_stored(raw, TriggerInput)
        # By name: the workflow does not load the activity's module (the mailbox reader).
        result: dict[str, Any] = await workflow.execute_activity(
            "poll_mailbox",
            start,
            start_to_close_timeout=POLL_TIMEOUT,
            retry_policy=POLL_RETRY,
            result_type=dict,
        )
        return result
