"""Every call that creates, changes or reads a Temporal schedule, and the runs started
directly (run now, a one-time task's catch-up).

The API, reconcile, the history activities and the worker's system schedules all go through
this module; the names it uses come from ``schema.temporal_ids``. Callers that change a
task's schedule hold the task's row lock (``crud.lock_task``), so its row and its schedule
move together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from schema import crud
from schema.cron import parse_cron
from schema.orm import Task
from schema.tasks import RunRef, TaskRunInput, TaskSpec, TriggerInput
from schema.temporal_ids import (
    EMAIL_POLL_WORKFLOW,
    PREVIEW_PREFIX,
    RETENTION_SCHEDULE_ID,
    RETENTION_WORKFLOW,
    TASK_ID_ATTRIBUTE,
    TASK_PREFIX,
    TASK_WORKFLOW,
    poll_workflow_id,
    schedule_id,
    search_attributes,
)
from schema.triggers import EmailTrigger

log = logging.getLogger("cronpilot.scheduling")

# Changes happen under a row lock: a Temporal that does not answer must not hold it long.
RPC_TIMEOUT = timedelta(seconds=10)
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
UPCOMING_CONCURRENCY = 16
PREVIEW_DAYS = 400  # how far validation looks for the next runs
IN_FLIGHT_LIMIT = 100


@dataclass(frozen=True)
class ScheduledTask:
    """What a schedule is built from: a task's identity, spec and state."""

    task_id: uuid.UUID
    user_id: uuid.UUID
    spec: TaskSpec
    created_at: datetime
    paused: bool = False

    @classmethod
    def of(cls, task: Task) -> ScheduledTask:
        return cls(
            task.id, task.user_id, crud.task_spec(task), task.created_at, task.status == "paused"
        )

    @property
    def run_at(self) -> datetime | None:
        """A one-time task's instant (None for recurring tasks)."""
        schedule = self.spec.schedule
        return schedule.run_at if self.spec.type == "one_time" and schedule else None


def _spec(task: ScheduledTask) -> ScheduleSpec:
    schedule = task.spec.schedule
    assert schedule is not None
    if task.run_at is not None:
        at = task.run_at.astimezone(UTC)
        return ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(at.second)],
                    minute=[ScheduleRange(at.minute)],
                    hour=[ScheduleRange(at.hour)],
                    day_of_month=[ScheduleRange(at.day)],
                    month=[ScheduleRange(at.month)],
                    year=[ScheduleRange(at.year)],
                )
            ],
            time_zone_name="UTC",
        )
    common: dict[str, Any] = {
        "start_at": schedule.start_at,
        "end_at": schedule.end_at,
        "jitter": timedelta(seconds=schedule.jitter_seconds) if schedule.jitter_seconds else None,
        "time_zone_name": schedule.timezone,
    }
    if schedule.cron:
        return ScheduleSpec(cron_expressions=[schedule.cron], **common)
    assert schedule.interval_seconds is not None
    # Intervals count from the start (or the task's creation), not from the Unix epoch.
    anchor = schedule.start_at or task.created_at
    offset = int(anchor.timestamp()) % schedule.interval_seconds
    every = timedelta(seconds=schedule.interval_seconds)
    return ScheduleSpec(
        intervals=[ScheduleIntervalSpec(every=every, offset=timedelta(seconds=offset))], **common
    )


def task_memo(task: ScheduledTask) -> dict[str, Any]:
    """What the schedule's action remembers of the task, to tell when it drifted."""
    return {
        "task_id": str(task.task_id),
        "user_id": str(task.user_id),
        "spec_hash": task.spec.spec_hash(),
        "run_at": task.run_at.isoformat() if task.run_at else None,
    }


def schedule_for_task(
    task: ScheduledTask,
    task_queue: str,
    *,
    note: str | None = None,
    remaining_actions: int | None = None,
) -> Schedule:
    """The Temporal schedule that runs ``task``; its action carries the whole spec.

    A one-time task's schedule has one action; ``remaining_actions`` keeps what an existing
    schedule has left (0 once it fired), so that an update never makes it fire again.
    An email-trigger task's schedule polls its mailbox (``poll_schedule``)."""
    if isinstance(task.spec.trigger, EmailTrigger):
        return poll_schedule(task, task.spec.trigger, task_queue, note=note)
    schedule = task.spec.schedule
    assert schedule is not None
    one_time = task.run_at is not None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TASK_WORKFLOW,
            TaskRunInput(task_id=task.task_id, user_id=task.user_id, task=task.spec),
            id=schedule_id(task.task_id),
            task_queue=task_queue,
            memo=task_memo(task),
            typed_search_attributes=search_attributes(task.task_id, task.user_id),
        ),
        spec=_spec(task),
        policy=SchedulePolicy(
            overlap=OVERLAP[schedule.overlap],
            catchup_window=timedelta(seconds=schedule.catchup_window_seconds),
        ),
        state=ScheduleState(
            note=note,
            paused=task.paused,
            limited_actions=one_time,
            remaining_actions=(1 if remaining_actions is None else remaining_actions)
            if one_time
            else 0,
        ),
    )


def poll_schedule(
    task: ScheduledTask, trigger: EmailTrigger, task_queue: str, *, note: str | None = None
) -> Schedule:
    """An email-trigger task's schedule: an ``EmailPollWorkflow`` every ``poll_seconds``,
    one at a time (a poll still running skips the next), paused with the task."""
    every = timedelta(seconds=trigger.poll_seconds)
    # Counted from the task's creation: tasks with the same period do not poll all at once.
    offset = timedelta(seconds=int(task.created_at.timestamp()) % trigger.poll_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            EMAIL_POLL_WORKFLOW,
            TriggerInput(
                task_id=task.task_id, user_id=task.user_id, task=task.spec, paused=task.paused
            ),
            id=poll_workflow_id(task.task_id),
            task_queue=task_queue,
            memo=task_memo(task),
            typed_search_attributes=search_attributes(task.task_id, task.user_id),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every, offset=offset)]),
        # A poll missed while Temporal was down is made up once; the next one follows anyway.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
        state=ScheduleState(note=note, paused=task.paused),
    )


# -- one task's schedule ------------------------------------------------------------------


async def describe(client: Client, task_id: uuid.UUID) -> ScheduleDescription | None:
    """The task's schedule as Temporal has it, or None when there is none."""
    try:
        return await client.get_schedule_handle(schedule_id(task_id)).describe(
            rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def memo_of(client: Client, description: ScheduleDescription) -> dict[str, Any]:
    """The memo of a described schedule's action (what ``task_memo`` wrote)."""
    action = description.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.memo:
        return {}
    converter = client.data_converter.payload_converter
    return {key: converter.from_payload(value) for key, value in action.memo.items()}


def next_action_at(description: ScheduleDescription) -> datetime | None:
    """When the described schedule acts next (None when paused or finished)."""
    if description.schedule.state.paused:
        return None
    state = description.schedule.state
    if state.limited_actions and state.remaining_actions <= 0:
        return None
    times = description.info.next_action_times
    return times[0] if times else None


async def next_run_at(client: Client, task_id: uuid.UUID) -> datetime | None:
    """The next time the task's schedule will act, or None (paused, finished or missing)."""
    description = await describe(client, task_id)
    return next_action_at(description) if description else None


class ScheduleRefused(Exception):
    """Temporal refused a schedule as invalid (the API answers a located 422)."""


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except RPCError as error:
        if error.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ScheduleRefused(error.message) from error
        raise


async def create_schedule(
    client: Client, task: ScheduledTask, task_queue: str, *, note: str | None = None
) -> None:
    with _refusals():
        await client.create_schedule(
            schedule_id(task.task_id),
            schedule_for_task(task, task_queue, note=note),
            search_attributes=search_attributes(task.task_id, task.user_id),
            rpc_timeout=RPC_TIMEOUT,
        )


async def sync_schedule(
    client: Client, task: ScheduledTask, task_queue: str, *, note: str | None = None
) -> None:
    """Make the task's schedule match the task: replaced in place (no gap, no lost firing),
    or created when it is missing. ``note`` says who paused or resumed it, and why."""

    def _replace(previous: ScheduleUpdateInput) -> ScheduleUpdate:
        old = previous.description.schedule.state
        remaining = None
        if task.run_at is not None and old.limited_actions:
            # The same instant keeps what is left (0 once it fired); a new one fires anew.
            same_instant = memo_of(client, previous.description).get("run_at") == (
                task.run_at.isoformat()
            )
            remaining = old.remaining_actions if same_instant else None
        kept_note = note if note is not None else (old.note if old.paused == task.paused else None)
        new = schedule_for_task(task, task_queue, note=kept_note, remaining_actions=remaining)
        return ScheduleUpdate(schedule=new)

    handle = client.get_schedule_handle(schedule_id(task.task_id))
    for _ in range(2):
        try:
            with _refusals():
                await handle.update(_replace, rpc_timeout=RPC_TIMEOUT)
            return
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            await create_schedule(client, task, task_queue, note=note)
            return
        except ScheduleAlreadyRunningError:
            continue  # created meanwhile by another process: update that one
    raise RuntimeError(f"schedule {schedule_id(task.task_id)} keeps appearing and vanishing")


async def pause_schedule(client: Client, task_id: uuid.UUID, note: str) -> bool:
    """Pause the task's schedule (no fire from now on); True when there was one."""
    try:
        await client.get_schedule_handle(schedule_id(task_id)).pause(
            note=note, rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def delete_schedule(client: Client, task_id: uuid.UUID) -> bool:
    """Remove the task's schedule; True when there was one (already gone is fine)."""
    try:
        await client.get_schedule_handle(schedule_id(task_id)).delete(rpc_timeout=RPC_TIMEOUT)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


# -- runs started directly ----------------------------------------------------------------


@dataclass(frozen=True)
class RunInFlight:
    """A run of a task that has not ended, and the runs it waits for before its action."""

    workflow_id: str
    run_id: str
    waits_for: tuple[str, ...] = ()


async def start_run(
    client: Client,
    task: ScheduledTask,
    task_queue: str,
    *,
    workflow_id: str,
    trigger: str,
    scheduled_at: datetime,
    wait_for: Sequence[RunInFlight] = (),
    once: bool = False,
    execution_id: uuid.UUID | None = None,
    payload: Any = None,
    rerun_of: uuid.UUID | None = None,
) -> str | None:
    """Start one run of the task outside its schedule (so it works while paused); its run
    id, or None when ``once`` and a run with that workflow id was already started."""
    run_input = TaskRunInput.model_validate(
        {
            "task_id": task.task_id,
            "user_id": task.user_id,
            "task": task.spec,
            "trigger": trigger,
            "scheduled_at": scheduled_at,
            "wait_for": [RunRef(workflow_id=r.workflow_id, run_id=r.run_id) for r in wait_for],
            "execution_id": execution_id,
            "payload": payload,
            "rerun_of": rerun_of,
        }
    )
    try:
        handle = await client.start_workflow(
            TASK_WORKFLOW,
            run_input,
            id=workflow_id,
            task_queue=task_queue,
            memo={
                "task_id": str(task.task_id),
                "user_id": str(task.user_id),
                "waits_for": [r.workflow_id for r in wait_for],
            },
            search_attributes=search_attributes(task.task_id, task.user_id),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
            if once
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            rpc_timeout=RPC_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        if once:
            return None
        raise
    assert handle.result_run_id is not None
    return handle.result_run_id


async def runs_in_flight(
    client: Client, task_id: uuid.UUID, known: Sequence[RunRef] = ()
) -> list[RunInFlight]:
    """The task's runs that have not ended, checked one by one against Temporal (strongly
    consistent): those its schedule is running, those visibility lists, and ``known`` (runs
    started so recently that visibility may not list them yet)."""
    candidates: dict[str, str | None] = {ref.workflow_id: ref.run_id for ref in known}
    description = await describe(client, task_id)
    if description is not None:
        for action in description.info.running_actions:
            if isinstance(action, ScheduleActionExecutionStartWorkflow):
                candidates.setdefault(action.workflow_id, action.first_execution_run_id)
    query = (
        f"{TASK_ID_ATTRIBUTE.name} = '{task_id}' AND ExecutionStatus = 'Running' "
        f"AND WorkflowType = '{TASK_WORKFLOW}'"
    )
    async for listed in client.list_workflows(
        query, limit=IN_FLIGHT_LIMIT, rpc_timeout=RPC_TIMEOUT
    ):
        candidates.setdefault(listed.id, listed.run_id)
    checks = [_in_flight(client, wid, rid) for wid, rid in candidates.items()]
    return [run for run in await asyncio.gather(*checks) if run is not None]


async def workflow_exists(client: Client, workflow_id: str) -> bool:
    """Whether a workflow with this id was ever started (and is not yet past retention)."""
    try:
        await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _in_flight(client: Client, workflow_id: str, run_id: str | None) -> RunInFlight | None:
    try:
        described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe(
            rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if described.status != WorkflowExecutionStatus.RUNNING:
        return None
    memo = await described.memo()
    waits_for = memo.get("waits_for") or []
    return RunInFlight(workflow_id, described.run_id, tuple(str(w) for w in waits_for))


async def cancel_runs(client: Client, runs: Sequence[RunInFlight]) -> None:
    """Ask each run to stop; each ends `cancelled` with its logs. A run that ended since it
    was listed needs nothing."""

    async def cancel(run: RunInFlight) -> None:
        handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        try:
            await handle.cancel(rpc_timeout=RPC_TIMEOUT)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise

    await asyncio.gather(*(cancel(run) for run in runs))


async def terminate_runs(client: Client, runs: Sequence[RunInFlight], reason: str) -> None:
    """Stop each run at once; they cannot record their own end."""
    await asyncio.gather(
        *(
            client.get_workflow_handle(r.workflow_id, run_id=r.run_id).terminate(
                reason=reason, rpc_timeout=RPC_TIMEOUT
            )
            for r in runs
        )
    )


# -- matching times (Temporal's own cron and DST semantics) ------------------------------


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


async def matching_times(
    client: Client, schedule: str, start: datetime, end: datetime
) -> list[datetime]:
    """When the schedule matches in [start, end), as Temporal computes it."""
    response = await client.workflow_service.list_schedule_matching_times(
        ListScheduleMatchingTimesRequest(
            namespace=client.namespace,
            schedule_id=schedule,
            start_time=_timestamp(start),
            end_time=_timestamp(end),
        )
    )
    return [stamp.ToDatetime(tzinfo=UTC) for stamp in response.start_time]


async def upcoming(
    client: Client, tasks: Sequence[Task], start: datetime, end: datetime, limit: int
) -> list[tuple[Task, datetime]]:
    """The next firings of the tasks in [start, end), merged in time order."""
    gate = asyncio.Semaphore(UPCOMING_CONCURRENCY)

    async def _times(task: Task) -> list[tuple[Task, datetime]]:
        async with gate:
            try:
                times = await matching_times(client, schedule_id(task.id), start, end)
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    return []
                raise
        return [(task, at) for at in times]

    found = await asyncio.gather(*(_times(task) for task in tasks))
    merged = sorted((pair for pairs in found for pair in pairs), key=lambda pair: pair[1])
    return merged[:limit]


@dataclass
class Preview:
    next_runs: list[datetime]
    dst_warnings: list[str] = field(default_factory=list)


async def preview(client: Client, spec: TaskSpec, task_queue: str, now: datetime) -> Preview:
    """Next runs and DST warnings for a spec, from a short-lived paused schedule (one left
    behind by a crash is swept by reconcile)."""
    schedule = spec.schedule
    assert schedule is not None
    if spec.type == "one_time":
        assert schedule.run_at is not None
        return Preview([schedule.run_at.astimezone(UTC)])
    task = ScheduledTask(uuid.UUID(int=0), uuid.UUID(int=0), spec, now, paused=True)
    preview_id = f"{PREVIEW_PREFIX}{uuid.uuid4()}"
    with _refusals():
        await client.create_schedule(
            preview_id, schedule_for_task(task, task_queue), rpc_timeout=RPC_TIMEOUT
        )
    try:
        next_runs: list[datetime] = []
        for horizon in (timedelta(days=2), timedelta(days=40), timedelta(days=PREVIEW_DAYS)):
            next_runs = await matching_times(client, preview_id, now, now + horizon)
            if len(next_runs) >= 5:
                break
        warnings = []
        if schedule.cron:
            warnings = await _dst_warnings(
                client, preview_id, schedule.cron, schedule.timezone, now
            )
    finally:
        await client.get_schedule_handle(preview_id).delete()
    return Preview(next_runs[:5], warnings)


async def sweep_previews(client: Client, older_than: timedelta) -> list[str]:
    """Delete preview schedules older than ``older_than`` (left behind by a crash)."""
    swept = []
    cutoff = datetime.now(UTC) - older_than
    async for listed in await client.list_schedules():
        if not listed.id.startswith(PREVIEW_PREFIX):
            continue
        handle = client.get_schedule_handle(listed.id)
        try:
            description = await handle.describe()
            if description.info.created_at <= cutoff:
                await handle.delete()
                swept.append(listed.id)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
    return swept


async def schedule_ids(client: Client) -> dict[uuid.UUID, str]:
    """Every ``task-{id}`` schedule in the namespace, by task id."""
    found = {}
    async for listed in await client.list_schedules():
        if listed.id.startswith(TASK_PREFIX):
            try:
                found[uuid.UUID(listed.id.removeprefix(TASK_PREFIX))] = listed.id
            except ValueError:
                continue  # not one of ours
    return found


def dst_change_days(zone: ZoneInfo, start: date, days: int = 366) -> list[date]:
    """Local dates within ``days`` of ``start`` on which the UTC offset changes."""
    changes = []
    for n in range(days):
        day = start + timedelta(days=n)
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        next_midnight = datetime.combine(day + timedelta(days=1), midnight.timetz())
        if midnight.utcoffset() != next_midnight.utcoffset():
            changes.append(day)
    return changes


async def _dst_warnings(
    client: Client, preview_id: str, cron: str, timezone: str, now: datetime
) -> list[str]:
    zone = ZoneInfo(timezone)
    expression = parse_cron(cron)
    warnings = []
    for day in dst_change_days(zone, now.astimezone(zone).date()):
        expected = expression.times_on(day)
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), start.timetz())
        fired = [at.astimezone(zone) for at in await matching_times(client, preview_id, start, end)]
        if len(fired) == len(expected):
            continue
        local = ", ".join(f"{at:%H:%M} {at:%Z}" for at in fired) or "no run"
        verb = "skips" if len(fired) < len(expected) else "doubles"
        warnings.append(
            f"{day.isoformat()}: the DST change in {timezone} {verb} runs: "
            f"{len(expected)} expected, Temporal fires {len(fired)} ({local})"
        )
    return warnings


# -- system schedules ---------------------------------------------------------------------


async def ensure_retention_schedule(client: Client, task_queue: str, retention_days: int) -> None:
    """The hourly schedule that settles unrecorded runs and trims history, up to date."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RETENTION_WORKFLOW,
            retention_days,
            id=RETENTION_SCHEDULE_ID,
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=["17 * * * *"], time_zone_name="UTC"),
    )
    try:
        await client.create_schedule(RETENTION_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:

        def _replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(RETENTION_SCHEDULE_ID).update(_replace)
