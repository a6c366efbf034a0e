"""A task's state changes, each moving its row and its Temporal schedule together.

Callers hold the task's row lock (``crud.lock_task``) and commit afterwards, so one task's
changes happen one at a time and the last writer's state is the state of both the row and
the schedule. If the commit fails after Temporal changed, the next reconcile (at start, then
every ten minutes) brings the schedule back in line with the row.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, ScheduleDescription
from temporalio.service import RPCError

from api import scheduling, triggers
from api.errors import Conflict, Invalid
from api.scheduling import RunInFlight, ScheduledTask
from schema import crud
from schema.actions import ACTION_ROUTES
from schema.chains import TaskChainAction
from schema.executions import ExecutionError, ExecutionFinished
from schema.orm import Task, User, utcnow
from schema.tasks import RunRef, TaskSpec
from schema.temporal_ids import MISSED_RUN_ID, catchup_workflow_id, manual_workflow_id

log = logging.getLogger("cronpilot.api")
# A one-time task's schedule that still has its action this long after run_at plus its
# catch-up window will not fire any more (Temporal drops actions older than the window).
FIRE_GRACE = timedelta(seconds=60)
PastDue = Literal["caught_up", "missed", "pending"]


async def require_own_tasks(session: AsyncSession, user: User, spec: TaskSpec) -> None:
    """A chain's task steps name tasks of the same user (another's is as good as missing)."""
    errors = await chain_task_problems(session, user.id, spec)
    if errors:
        raise Invalid(errors)


async def chain_task_problems(
    session: AsyncSession, user_id: uuid.UUID, spec: TaskSpec
) -> list[dict[str, Any]]:
    """Located errors for the task steps of a chain that name no task of this user."""
    if not isinstance(spec.action, TaskChainAction):
        return []
    errors = []
    for index, step in enumerate(spec.action.config.steps):
        if step.task_id is None:
            continue
        if await crud.get_task(session, user_id=user_id, task_id=step.task_id) is None:
            loc = ["body", "action", "task_chain", "config", "steps", index, "task_id"]
            errors.append({"loc": loc, "msg": f"you have no task {step.task_id}"})
    return errors


def require_available(spec: TaskSpec) -> None:
    """The action type has a route (some types land later)."""
    if spec.action.type != "task_chain" and spec.action.type not in ACTION_ROUTES:
        message = f"the {spec.action.type} action is not available yet"
        raise Invalid([{"loc": ["body", "action", "type"], "msg": message}])


def require_future_run(spec: TaskSpec, now: datetime) -> None:
    """The schedule can still fire: a one-time run_at, or a recurring end_at, lies ahead."""
    schedule = spec.schedule
    if spec.type == "one_time" and schedule and schedule.run_at and schedule.run_at <= now:
        raise Invalid([{"loc": ["body", "schedule", "run_at"], "msg": "must be in the future"}])
    if spec.type == "recurring" and schedule and schedule.end_at and schedule.end_at <= now:
        message = "must be in the future: a schedule that ended never fires"
        raise Invalid([{"loc": ["body", "schedule", "end_at"], "msg": message}])


async def refresh_next_run(task: Task, client: Client) -> None:
    """``next_run_at`` as the schedule will fire (the row's copy, for lists and sorting)."""
    schedule = crud.task_spec(task).schedule
    if task.status != "active" or schedule is None:
        task.next_run_at = None
    elif task.type == "one_time":
        task.next_run_at = (
            schedule.run_at if schedule.run_at and schedule.run_at > utcnow() else None
        )
    else:
        task.next_run_at = await scheduling.next_run_at(client, task.id)


async def create(
    session: AsyncSession, client: Client, task_queue: str, *, user: User, spec: TaskSpec
) -> Task:
    """A new task and its schedule. The schedule exists before the row commits: reconcile
    leaves young schedules without a row alone (``ORPHAN_GRACE``)."""
    require_available(spec)
    require_future_run(spec, utcnow())
    await require_own_tasks(session, user, spec)
    task = await crud.create_task(session, user_id=user.id, spec=spec)
    if crud.owns_schedule(task):
        await scheduling.create_schedule(client, ScheduledTask.of(task), task_queue)
    if crud.owns_trigger_workflow(task):
        await triggers.configure(client, ScheduledTask.of(task), task_queue)
    return task


async def sync_temporal(
    client: Client, task_queue: str, task: Task, *, note: str | None = None
) -> None:
    """Make the task's schedule and trigger workflow match its row: each made, updated or
    removed as the task's type and status ask."""
    scheduled = ScheduledTask.of(task)
    if crud.owns_schedule(task):
        await scheduling.sync_schedule(client, scheduled, task_queue, note=note)
    else:
        await scheduling.delete_schedule(client, task.id)
    if crud.owns_trigger_workflow(task):
        await triggers.configure(client, scheduled, task_queue)
    else:
        await triggers.stop(client, task.id, "the task is no longer a trigger task")


async def save_spec(
    session: AsyncSession, client: Client, task_queue: str, task: Task, spec: TaskSpec
) -> None:
    """Replace a task's definition; its schedule is updated in place."""
    require_available(spec)
    errors = await chain_task_problems(session, task.user_id, spec)
    if errors:
        raise Invalid(errors)
    old = crud.task_spec(task)
    rescheduled = old.type != spec.type or old.schedule != spec.schedule
    if task.status in ("completed", "failed") and not rescheduled:
        crud.apply_spec(task, spec)  # a finished task's description, name, tags...
        await session.flush()
        return
    if rescheduled or task.status in ("completed", "failed"):
        require_future_run(spec, utcnow())
    was_trigger = old.type == "trigger"
    crud.apply_spec(task, spec)
    if task.status in ("completed", "failed"):
        task.status = "active"  # a new run_at runs it again
    if was_trigger or spec.type == "trigger":
        await sync_temporal(client, task_queue, task)
    else:
        await scheduling.sync_schedule(client, ScheduledTask.of(task), task_queue)
    await refresh_next_run(task, client)
    await session.flush()


async def set_paused(
    session: AsyncSession,
    client: Client,
    task_queue: str,
    task: Task,
    *,
    paused: bool,
    note: str,
) -> None:
    """Pause or resume; the schedule is made to match the row even when the state does not
    change, and recreated from the row when it went missing."""
    if task.status in ("completed", "failed"):
        raise Conflict(f"the task is {task.status}; update its schedule to run it again")
    was_paused = task.status == "paused"
    task.status = "paused" if paused else "active"
    task.updated_at = utcnow()
    scheduled = ScheduledTask.of(task)
    now = utcnow()
    past_due = not paused and scheduled.run_at is not None and scheduled.run_at <= now
    if past_due and was_paused and not _fired(await scheduling.describe(client, task.id)):
        await settle_past_due(session, client, task_queue, task, now=now)
    elif task.type == "trigger":
        await sync_temporal(client, task_queue, task, note=note)
    else:
        await scheduling.sync_schedule(client, scheduled, task_queue, note=note)
        await refresh_next_run(task, client)
    await session.flush()


async def delete(session: AsyncSession, client: Client, task: Task) -> list[RunInFlight]:
    """Delete the task, its history and its webhooks, once nothing can start a run of it:
    its schedule is paused (so the runs it is running are listed exactly), then deleted;
    its trigger workflow is cancelled (it drops the deliveries still waiting and cancels
    the runs it started). Returns the runs in flight, for ``stop_runs`` once the delete
    committed: from then on the task is gone for them too (no secrets, no resume)."""
    if crud.owns_schedule(task):
        await scheduling.pause_schedule(client, task.id, "the task is being deleted")
    in_flight = await scheduling.runs_in_flight(client, task.id, _last_manual(task))
    await scheduling.delete_schedule(client, task.id)
    if task.type == "trigger":
        await triggers.cancel(client, task.id)
    await session.delete(task)
    await session.flush()
    return in_flight


async def stop_runs(client: Client, task_id: uuid.UUID, runs: list[RunInFlight]) -> None:
    """Cancel the runs in flight of a task just deleted (chains waiting for their resume
    URL included). When Temporal cannot be asked, they run to their end, without secrets
    or records: the delete stands, and the log says so."""
    try:
        await scheduling.cancel_runs(client, runs)
    except RPCError as error:
        log.warning(
            "task %s deleted, but its %d runs in flight not cancelled: %s",
            task_id,
            len(runs),
            error,
        )
        return
    if runs:
        log.info("task %s deleted: %d runs in flight cancelled", task_id, len(runs))


# -- a one-time task whose run_at passed without its run -----------------------------------


def _fired(description: ScheduleDescription | None) -> bool:
    """Whether a one-time task's schedule already acted (its run may still be going, or its
    record be on its way after a database outage): then there is nothing to catch up."""
    if description is None:
        return False
    state, info = description.schedule.state, description.info
    spent = state.limited_actions and state.remaining_actions <= 0
    return spent or bool(info.recent_actions or info.running_actions)


def never_fires(
    task: ScheduledTask, description: ScheduleDescription | None, now: datetime
) -> bool:
    """Whether an active one-time task's run_at passed and its schedule will not run it:
    the schedule is gone, or it still holds its action long after Temporal would fire it."""
    run_at = task.run_at
    if run_at is None or task.paused or run_at > now:
        return False
    if description is None:
        return True
    state = description.schedule.state
    assert task.spec.schedule is not None
    window = timedelta(seconds=task.spec.schedule.catchup_window_seconds)
    return state.remaining_actions > 0 and now > run_at + window + FIRE_GRACE


async def settle_past_due(
    session: AsyncSession, client: Client, task_queue: str, task: Task, *, now: datetime
) -> PastDue:
    """A one-time task whose run_at passed without its run (it was paused across it, or its
    schedule was lost). Within the task's catch-up window it runs at once, as the schedule
    would have run it (trigger ``schedule``); later it is ``failed`` with a ``Missed`` run
    in its history. A catch-up already started is left to finish ("pending")."""
    scheduled = ScheduledTask.of(task)
    run_at = scheduled.run_at
    assert run_at is not None and scheduled.spec.schedule is not None
    catchup_id = catchup_workflow_id(task.id, run_at)
    task.next_run_at = None
    if await scheduling.workflow_exists(client, catchup_id):
        return "pending"  # its record completes the task
    # Temporal must not fire it too, now that we decide.
    await scheduling.delete_schedule(client, task.id)
    window = timedelta(seconds=scheduled.spec.schedule.catchup_window_seconds)
    if now - run_at <= window:
        await scheduling.start_run(
            client,
            scheduled,
            task_queue,
            workflow_id=catchup_id,
            trigger="schedule",
            scheduled_at=run_at,
            once=True,
        )
        return "caught_up"
    late = now - run_at
    record = ExecutionFinished(
        execution_id=uuid.uuid4(),
        task_id=task.id,
        user_id=task.user_id,
        workflow_id=catchup_id,
        run_id=MISSED_RUN_ID,
        trigger="schedule",
        scheduled_at=run_at,
        started_at=now,
        task_type="one_time",
        status="failed",
        finished_at=now,
        attempts=0,
        error=ExecutionError(
            type="Missed",
            message=f"run_at passed {_duration(late)} ago while the task was paused or had no "
            f"schedule, beyond its catch-up window of {_duration(window)}; set a new run_at "
            "or run it now",
        ),
        run_at=run_at,
    )
    if await crud.record_finished(session, record):
        await crud.count_run(
            session,
            task_id=task.id,
            status="failed",
            finished_at=now,
            task_status="failed",
            next_run_at=None,
        )
        await session.refresh(task)
    task.status = "failed"
    return "missed"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


# -- run now --------------------------------------------------------------------------------


@dataclass
class RunStarted:
    execution_id: uuid.UUID
    workflow_id: str
    run_id: str
    terminated: list[RunInFlight]


def overlap_of(task: Task) -> str:
    schedule = crud.task_spec(task).schedule
    return schedule.overlap if schedule else "allow_all"


async def run_now(
    session: AsyncSession,
    client: Client,
    task_queue: str,
    task: Task,
    *,
    shared: bool = False,
    payload: Any = None,
    rerun_of: uuid.UUID | None = None,
) -> RunStarted:
    """Start a run now (trigger ``manual``), honouring the task's overlap policy against the
    runs in flight, scheduled or manual: ``skip`` refuses (409); ``buffer_one`` and
    ``buffer_all`` queue the run behind them (``buffer_one`` refuses a second queued run);
    ``cancel_other`` cancels them and runs once they ended; ``terminate_other`` terminates
    them and runs at once; ``allow_all`` runs at once."""
    scheduled = ScheduledTask.of(task)
    policy = overlap_of(task)
    if shared and policy != "allow_all":
        raise Conflict("the task's overlap policy changed meanwhile; try again")
    wait_for: list[RunInFlight] = []
    terminated: list[RunInFlight] = []
    if policy != "allow_all":
        in_flight = await scheduling.runs_in_flight(client, task.id, _last_manual(task))
        if in_flight and policy == "skip":
            raise Conflict(
                f"{_runs(in_flight)} in flight and the task's overlap policy is skip; "
                "try again when it ended, or change the policy"
            )
        if in_flight and policy == "buffer_one" and _queued(in_flight):
            raise Conflict(
                "a run is already queued behind the one in flight and the task's overlap "
                "policy is buffer_one"
            )
        if in_flight and policy == "terminate_other":
            await scheduling.terminate_runs(client, in_flight, "run now (overlap terminate_other)")
            terminated = in_flight
        elif in_flight:
            if policy == "cancel_other":
                await scheduling.cancel_runs(client, in_flight)
            wait_for = in_flight
    workflow_id = manual_workflow_id(task.id)
    execution_id = uuid.uuid4()
    run_id = await scheduling.start_run(
        client,
        scheduled,
        task_queue,
        workflow_id=workflow_id,
        trigger="manual",
        scheduled_at=datetime.now(UTC),
        wait_for=wait_for,
        execution_id=execution_id,
        payload=payload,
        rerun_of=rerun_of,
    )
    assert run_id is not None
    if not shared:  # allow_all never looks at it
        task.last_manual_workflow_id, task.last_manual_run_id = workflow_id, run_id
        await session.flush()
    return RunStarted(execution_id, workflow_id, run_id, terminated)


def _last_manual(task: Task) -> list[RunRef]:
    """The task's last run started by hand (visibility may not list it yet)."""
    if not task.last_manual_workflow_id:
        return []
    return [RunRef(workflow_id=task.last_manual_workflow_id, run_id=task.last_manual_run_id)]


def _queued(in_flight: list[RunInFlight]) -> bool:
    """Whether one of the runs is still waiting for another one of them."""
    running = {run.workflow_id for run in in_flight}
    return any(running & set(run.waits_for) for run in in_flight)


def _runs(in_flight: list[RunInFlight]) -> str:
    return "a run is" if len(in_flight) == 1 else f"{len(in_flight)} runs are"
