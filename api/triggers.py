"""Temporal's side of trigger tasks: their ``TriggerWorkflow`` and the deliveries sent to it.

A delivery is sent with signal-with-start and answered only once Temporal accepted the
signal, so an accepted delivery is never lost. Deliveries refuse to start a workflow whose
id was used before (``REJECT_DUPLICATE``): once a task's workflow is stopped (the task was
deleted) a delivery racing the delete cannot bring it back. The API's own changes (create,
update, pause, resume, reconcile) start it again when it is missing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.scheduling import ScheduledTask
from schema import crud
from schema.tasks import TriggerConfig, TriggerInput
from schema.temporal_ids import (
    CONFIGURE_SIGNAL,
    DELIVER_SIGNAL,
    TRIGGER_WORKFLOW,
    delivery_workflow_id,
    search_attributes,
    task_id_of_trigger,
    trigger_workflow_id,
)
from schema.triggers import MAX_EVENT_DEPTH, Delivery, delivery_digest

RPC_TIMEOUT = timedelta(seconds=10)


class TriggerGone(Exception):
    """The task's trigger workflow was stopped (the task is being deleted)."""


def run_workflow_id(task_id: uuid.UUID, delivery: Delivery) -> str:
    """The workflow id the delivery's run gets (also when it is a repeat that will not run)."""
    return delivery_workflow_id(task_id, delivery.kind, delivery_digest(delivery.delivery_id))


async def _signal_with_start(
    client: Client,
    task: ScheduledTask,
    task_queue: str,
    signal: str,
    argument: Any,
    reuse: WorkflowIDReusePolicy,
) -> None:
    """Signal the task's trigger workflow, starting it (with the task as it is now) when it
    is not running and ``reuse`` allows."""
    await client.start_workflow(
        TRIGGER_WORKFLOW,
        TriggerInput(
            task_id=task.task_id, user_id=task.user_id, task=task.spec, paused=task.paused
        ),
        id=trigger_workflow_id(task.task_id),
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[argument],
        id_reuse_policy=reuse,
        search_attributes=search_attributes(task.task_id, task.user_id),
        memo={"task_id": str(task.task_id), "user_id": str(task.user_id)},
        rpc_timeout=RPC_TIMEOUT,
    )


async def deliver(client: Client, task: ScheduledTask, task_queue: str, delivery: Delivery) -> str:
    """Hand one delivery to the task's trigger workflow (started if needed); returns once
    Temporal has durably accepted it, with the workflow id of the run it becomes. Raises
    ``TriggerGone`` when the workflow was stopped, RPCError when Temporal is unreachable."""
    try:
        await _signal_with_start(
            client,
            task,
            task_queue,
            DELIVER_SIGNAL,
            delivery,
            WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise TriggerGone(str(task.task_id)) from None
    return run_workflow_id(task.task_id, delivery)


async def configure(client: Client, task: ScheduledTask, task_queue: str) -> None:
    """Tell the task's trigger workflow the task as it is now (paused or not), starting it
    when it is not running."""
    await _signal_with_start(
        client,
        task,
        task_queue,
        CONFIGURE_SIGNAL,
        TriggerConfig(task=task.spec, paused=task.paused),
        WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def stop(client: Client, task_id: uuid.UUID, reason: str) -> bool:
    """Terminate the task's trigger workflow; True when it was running. Runs it started go
    on to their end."""
    handle: WorkflowHandle[object, object] = client.get_workflow_handle(
        trigger_workflow_id(task_id)
    )
    try:
        await handle.terminate(reason=reason, rpc_timeout=RPC_TIMEOUT)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def cancel(client: Client, task_id: uuid.UUID) -> bool:
    """Cancel the task's trigger workflow (its task is being deleted): it drops the
    deliveries that wait, cancels the runs it started, and ends with the list of both.
    True when it was running."""
    handle: WorkflowHandle[object, object] = client.get_workflow_handle(
        trigger_workflow_id(task_id)
    )
    try:
        await handle.cancel(rpc_timeout=RPC_TIMEOUT)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def running_triggers(client: Client) -> dict[uuid.UUID, datetime]:
    """The tasks whose trigger workflow is running, with when it (first) started."""
    query = f"WorkflowType = '{TRIGGER_WORKFLOW}' AND ExecutionStatus = 'Running'"
    found: dict[uuid.UUID, datetime] = {}
    async for execution in client.list_workflows(query, rpc_timeout=RPC_TIMEOUT):
        task_id = task_id_of_trigger(execution.id)
        if task_id is not None:
            found[task_id] = execution.start_time
    return found


async def is_running(client: Client, task_id: uuid.UUID) -> bool:
    try:
        description = await client.get_workflow_handle(trigger_workflow_id(task_id)).describe(
            rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return description.status is not None and description.status.name == "RUNNING"


async def in_line(client: Client, task: ScheduledTask) -> bool:
    """Whether the running trigger workflow already has the task as it is (by its state
    query; False when it cannot answer)."""
    handle = client.get_workflow_handle(trigger_workflow_id(task.task_id))
    try:
        state = await handle.query("state", rpc_timeout=RPC_TIMEOUT)
    except Exception:  # no worker to answer, or gone: tell it again
        return False
    return (
        isinstance(state, dict)
        and state.get("spec_hash") == task.spec.spec_hash()
        and state.get("paused") == task.paused
    )


@dataclass
class EventOutcome:
    """What one event did: how many tasks it matched, and which ones it started."""

    matched: int = 0
    started: list[str] = field(default_factory=list)
    # Matching tasks not started: the event came too deep in a chain of events.
    refused: list[str] = field(default_factory=list)


async def deliver_event(
    session: AsyncSession,
    client: Client,
    task_queue: str,
    *,
    user_id: uuid.UUID,
    name: str,
    payload: Any,
    event_id: str,
    depth: int,
    exclude: uuid.UUID | None = None,
) -> EventOutcome:
    """Start the user's active event-trigger tasks for ``name``, each as one delivery whose
    id is ``event_id`` (a repeat of the same event runs each task once). Runs it starts
    are ``depth`` event hops deep; beyond ``MAX_EVENT_DEPTH`` none is started."""
    outcome = EventOutcome()
    for task in await crud.event_tasks(session, user_id=user_id, name=name):
        if task.id == exclude:
            continue
        outcome.matched += 1
        if depth > MAX_EVENT_DEPTH:
            outcome.refused.append(str(task.id))
            continue
        delivery = Delivery(
            delivery_id=event_id,
            kind="event",
            payload=payload,
            received_at=datetime.now(UTC),
            depth=depth,
        )
        try:
            started = await deliver(client, ScheduledTask.of(task), task_queue, delivery)
        except TriggerGone:
            outcome.matched -= 1  # deleted meanwhile
            continue
        outcome.started.append(started)
    return outcome
