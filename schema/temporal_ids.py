"""Every Temporal name Cronpilot uses: ids, prefixes, search attributes, Web UI links.

Pure: no I/O, safe to import from workflows. Everything that names a schedule, a workflow
or a link into the Temporal Web UI builds it here, so the names stay consistent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

# Schedules and runs of a task: the schedule `task-{id}`, its runs `task-{id}-{time}`.
TASK_PREFIX = "task-"
# Short-lived paused schedules that /api/tasks/validate asks for matching times.
PREVIEW_PREFIX = "cronpilot-validate-"
RETENTION_SCHEDULE_ID = "cronpilot-retention"
# A run's final record, written later when the database was down at the end of the run.
RECORD_PREFIX = "cronpilot-record-"

# The run id of a one-time task's run that never happened (the `Missed` record).
MISSED_RUN_ID = "missed"

TASK_WORKFLOW = "TaskWorkflow"
TRIGGER_WORKFLOW = "TriggerWorkflow"
EMAIL_POLL_WORKFLOW = "EmailPollWorkflow"
# A trigger task's long-lived workflow, reached by signal-with-start.
TRIGGER_PREFIX = "trigger-"
DELIVER_SIGNAL = "deliver"
CONFIGURE_SIGNAL = "configure"
RECORD_EXECUTION_WORKFLOW = "RecordExecutionWorkflow"
RETENTION_WORKFLOW = "RetentionWorkflow"

# `run_code` actions run on `<task queue>-code`, so operators can isolate them.
CODE_QUEUE_SUFFIX = "-code"
WAIT_QUEUE_SUFFIX = "-wait"

TASK_ID_ATTRIBUTE = SearchAttributeKey.for_keyword("CronpilotTaskId")
USER_ID_ATTRIBUTE = SearchAttributeKey.for_keyword("CronpilotUserId")
# Set by Temporal on runs a schedule started.
SCHEDULED_START_ATTRIBUTE = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def schedule_id(task_id: uuid.UUID | str) -> str:
    """The task's schedule; also the prefix of every one of its runs' workflow ids."""
    return f"{TASK_PREFIX}{task_id}"


def task_id_of_schedule(schedule: str) -> uuid.UUID | None:
    """The task a ``task-{id}`` schedule belongs to, or None for any other schedule."""
    if not schedule.startswith(TASK_PREFIX):
        return None
    try:
        return uuid.UUID(schedule.removeprefix(TASK_PREFIX))
    except ValueError:
        return None


def manual_workflow_id(task_id: uuid.UUID) -> str:
    """A run started by hand (run now): unique each time."""
    return f"{schedule_id(task_id)}-manual-{uuid.uuid4()}"


def catchup_workflow_id(task_id: uuid.UUID, run_at: datetime) -> str:
    """The one catch-up run of a one-time task resumed after its time: one per ``run_at``,
    so a repeated resume cannot start it twice."""
    stamp = run_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{schedule_id(task_id)}-catchup-{stamp}"


def poll_workflow_id(task_id: uuid.UUID) -> str:
    """The mailbox polls of an email-trigger task (its schedule appends the time)."""
    return f"{schedule_id(task_id)}-poll"


def trigger_workflow_id(task_id: uuid.UUID | str) -> str:
    """The one long-lived ``TriggerWorkflow`` of a trigger task."""
    return f"{TRIGGER_PREFIX}{task_id}"


def task_id_of_trigger(workflow_id: str) -> uuid.UUID | None:
    """The task a ``trigger-{id}`` workflow belongs to, or None for any other workflow."""
    if not workflow_id.startswith(TRIGGER_PREFIX):
        return None
    try:
        return uuid.UUID(workflow_id.removeprefix(TRIGGER_PREFIX))
    except ValueError:
        return None


def delivery_workflow_id(task_id: uuid.UUID, kind: str, digest: str) -> str:
    """The run of one delivery: derived from its id (``delivery_digest``), so Temporal's
    workflow-id uniqueness refuses a repeat that outlived the dedup window."""
    return f"{schedule_id(task_id)}-{kind}-{digest}"


def record_workflow_id(run_id: str) -> str:
    """The workflow that writes a run's final record once the database is back."""
    return f"{RECORD_PREFIX}{run_id}"


def search_attributes(task_id: uuid.UUID, user_id: uuid.UUID) -> TypedSearchAttributes:
    """What operators filter by in the Temporal Web UI: the task and its owner."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TASK_ID_ATTRIBUTE, str(task_id)),
            SearchAttributePair(USER_ID_ATTRIBUTE, str(user_id)),
        ]
    )


def code_queue(task_queue: str) -> str:
    return task_queue + CODE_QUEUE_SUFFIX


def wait_queue(task_queue: str) -> str:
    """Where runs queued by an overlap policy wait: slots of their own, so that waiting
    runs never take the slots of the actions they wait for."""
    return task_queue + WAIT_QUEUE_SUFFIX


class WebUi:
    """Links into the Temporal Web UI of one namespace."""

    def __init__(self, base_url: str, namespace: str) -> None:
        self.root = f"{base_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}"

    def schedule(self, schedule: str) -> str:
        return f"{self.root}/schedules/{quote(schedule, safe='')}"

    def workflow(self, workflow_id: str, run_id: str) -> str:
        wf, run = quote(workflow_id, safe=":"), quote(run_id, safe="")
        return f"{self.root}/workflows/{wf}/{run}/history"

    def task_runs(self, task_id: uuid.UUID) -> str:
        """Every run of a task, whatever started it."""
        return f"{self.root}/workflows?query=" + quote(f'{TASK_ID_ATTRIBUTE.name}="{task_id}"')
