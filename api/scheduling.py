"""Every call that creates, changes or reads a Temporal schedule, and the direct starts."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.history import schedule_id_for
from schema import crud
from schema.cron import parse_cron
from schema.orm import Task
from schema.tasks import TaskRunInput, TaskSpec
from schema.temporal import TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE
from workflows.task import TaskWorkflow

log = logging.getLogger("cronpilot.scheduling")

SCHEDULE_PREFIX = "task-"
PREVIEW_PREFIX = "cronpilot-validate-"
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
UPCOMING_CONCURRENCY = 16


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


def _search_attributes(task_id: uuid.UUID, user_id: uuid.UUID) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(TASK_ID_ATTRIBUTE, str(task_id)),
            SearchAttributePair(USER_ID_ATTRIBUTE, str(user_id)),
        ]
    )


def _spec(task: ScheduledTask) -> ScheduleSpec:
    schedule = task.spec.schedule
    assert schedule is not None
    if task.spec.type == "one_time":
        assert schedule.run_at is not None
        at = schedule.run_at.astimezone(UTC)
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


def schedule_for_task(task: ScheduledTask, task_queue: str, note: str | None = None) -> Schedule:
    """The Temporal schedule that runs ``task``; its action carries the whole spec."""
    schedule = task.spec.schedule
    assert schedule is not None
    one_time = task.spec.type == "one_time"
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TaskWorkflow.run,
            TaskRunInput(task_id=task.task_id, user_id=task.user_id, task=task.spec),
            id=schedule_id_for(task.task_id),
            task_queue=task_queue,
            memo={
                "task_id": str(task.task_id),
                "user_id": str(task.user_id),
                "spec_hash": task.spec.spec_hash(),
            },
            typed_search_attributes=_search_attributes(task.task_id, task.user_id),
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
            remaining_actions=1 if one_time else 0,
        ),
    )


async def create_schedule(client: Client, task: ScheduledTask, task_queue: str) -> None:
    await client.create_schedule(
        schedule_id_for(task.task_id),
        schedule_for_task(task, task_queue),
        search_attributes=_search_attributes(task.task_id, task.user_id),
    )


async def update_schedule(client: Client, task: ScheduledTask, task_queue: str) -> None:
    """Replace the schedule's definition in place (no gap, no lost firing)."""
    new = schedule_for_task(task, task_queue)

    def _replace(previous: ScheduleUpdateInput) -> ScheduleUpdate:
        if new.state.paused == previous.description.schedule.state.paused:
            new.state.note = previous.description.schedule.state.note
        return ScheduleUpdate(schedule=new)

    await client.get_schedule_handle(schedule_id_for(task.task_id)).update(_replace)


async def upsert_schedule(client: Client, task: ScheduledTask, task_queue: str) -> None:
    """Update the schedule in place, or create it when it is missing."""
    try:
        await update_schedule(client, task, task_queue)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        await create_schedule(client, task, task_queue)


async def delete_schedule(client: Client, task_id: uuid.UUID) -> None:
    """Remove the task's schedule; already gone is fine."""
    try:
        await client.get_schedule_handle(schedule_id_for(task_id)).delete()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise


async def set_paused(client: Client, task_id: uuid.UUID, *, paused: bool, note: str) -> None:
    handle = client.get_schedule_handle(schedule_id_for(task_id))
    if paused:
        await handle.pause(note=note)
    else:
        await handle.unpause(note=note)


async def next_run_at(client: Client, task_id: uuid.UUID) -> datetime | None:
    """The next time the schedule will act, or None (paused, finished or missing)."""
    try:
        description = await client.get_schedule_handle(schedule_id_for(task_id)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if description.schedule.state.paused:
        return None
    times = description.info.next_action_times
    return times[0] if times else None


async def start_run_now(client: Client, task: ScheduledTask, task_queue: str) -> tuple[str, str]:
    """Start one manual run directly, outside the schedule (so it works while paused)."""
    workflow_id = f"{SCHEDULE_PREFIX}{task.task_id}-manual-{uuid.uuid4()}"
    handle = await client.start_workflow(
        TaskWorkflow.run,
        TaskRunInput(
            task_id=task.task_id,
            user_id=task.user_id,
            task=task.spec,
            trigger="manual",
            scheduled_at=datetime.now(UTC),
        ),
        id=workflow_id,
        task_queue=task_queue,
        memo={"task_id": str(task.task_id), "user_id": str(task.user_id)},
        search_attributes=_search_attributes(task.task_id, task.user_id),
    )
    assert handle.result_run_id is not None
    return workflow_id, handle.result_run_id


# -- matching times (Temporal's own cron and DST semantics) ------------------------------


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


async def matching_times(
    client: Client, schedule_id: str, start: datetime, end: datetime
) -> list[datetime]:
    """When the schedule matches in [start, end), as Temporal computes it."""
    response = await client.workflow_service.list_schedule_matching_times(
        ListScheduleMatchingTimesRequest(
            namespace=client.namespace,
            schedule_id=schedule_id,
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
                times = await matching_times(client, schedule_id_for(task.id), start, end)
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
    dst_warnings: list[str]


async def preview(client: Client, spec: TaskSpec, task_queue: str, now: datetime) -> Preview:
    """Next runs and DST warnings for a spec, from a short-lived paused schedule."""
    schedule = spec.schedule
    assert schedule is not None
    if spec.type == "one_time":
        assert schedule.run_at is not None
        return Preview([schedule.run_at.astimezone(UTC)], [])
    task = ScheduledTask(uuid.UUID(int=0), uuid.UUID(int=0), spec, now, paused=True)
    schedule_id = f"{PREVIEW_PREFIX}{uuid.uuid4()}"
    await client.create_schedule(schedule_id, schedule_for_task(task, task_queue))
    try:
        next_runs: list[datetime] = []
        for horizon in (timedelta(days=2), timedelta(days=40), timedelta(days=400)):
            next_runs = await matching_times(client, schedule_id, now, now + horizon)
            if len(next_runs) >= 5:
                break
        warnings = []
        if schedule.cron:
            warnings = await _dst_warnings(
                client, schedule_id, schedule.cron, schedule.timezone, now
            )
    finally:
        await client.get_schedule_handle(schedule_id).delete()
    return Preview(next_runs[:5], warnings)


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
    client: Client, schedule_id: str, cron: str, timezone: str, now: datetime
) -> list[str]:
    zone = ZoneInfo(timezone)
    expression = parse_cron(cron)
    warnings = []
    for day in dst_change_days(zone, now.astimezone(zone).date()):
        expected = expression.times_on(day)
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), start.timetz())
        fired = [
            at.astimezone(zone) for at in await matching_times(client, schedule_id, start, end)
        ]
        if len(fired) == len(expected):
            continue
        local = ", ".join(f"{at:%H:%M} {at:%Z}" for at in fired) or "no run"
        verb = "skips" if len(fired) < len(expected) else "doubles"
        warnings.append(
            f"{day.isoformat()}: the DST change in {timezone} {verb} runs: "
            f"{len(expected)} expected, Temporal fires {len(fired)} ({local})"
        )
    return warnings


# -- reconcile ----------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    created: list[str]
    updated: list[str]
    deleted: list[str]


async def _action_memo(client: Client, schedule_id: str) -> tuple[dict[str, Any], bool]:
    description = await client.get_schedule_handle(schedule_id).describe()
    action = description.schedule.action
    memo: dict[str, Any] = {}
    if isinstance(action, ScheduleActionStartWorkflow) and action.memo:
        converter = client.data_converter.payload_converter
        memo = {key: converter.from_payload(value) for key, value in action.memo.items()}
    return memo, description.schedule.state.paused


async def reconcile(session: AsyncSession, client: Client, task_queue: str) -> ReconcileReport:
    """Make Temporal's ``task-*`` schedules match the database, both ways; safe to repeat."""
    report = ReconcileReport([], [], [])
    wanted = {schedule_id_for(task.id): task for task in await crud.scheduled_tasks(session)}
    existing = set()
    async for listed in await client.list_schedules():
        if listed.id.startswith(SCHEDULE_PREFIX):
            existing.add(listed.id)
    now = datetime.now(UTC)
    for schedule_id, task in wanted.items():
        scheduled = ScheduledTask.of(task)
        if schedule_id not in existing:
            run_at = scheduled.spec.schedule.run_at if scheduled.spec.schedule else None
            if run_at is not None and run_at <= now:
                log.warning("one-time task %s is past due without a schedule", task.id)
                continue
            await create_schedule(client, scheduled, task_queue)
            report.created.append(schedule_id)
            continue
        memo, paused = await _action_memo(client, schedule_id)
        if memo.get("spec_hash") != scheduled.spec.spec_hash() or paused != scheduled.paused:
            await update_schedule(client, scheduled, task_queue)
            report.updated.append(schedule_id)
    for schedule_id in sorted(existing - wanted.keys()):
        await client.get_schedule_handle(schedule_id).delete()
        report.deleted.append(schedule_id)
    return report
