"""Reconcile: make Temporal's task schedules match the database, both ways.

Each task is handled under its row lock with its row read afresh, like every API change, so
reconcile never undoes a user's write. A schedule without a row is deleted only once it is
older than ``ORPHAN_GRACE`` (a task being created has its schedule before its row commits),
after checking again that the row is still missing. Safe to run any time, from any process.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api import lifecycle, scheduling, triggers
from api.scheduling import ScheduledTask
from schema import crud
from schema.orm import utcnow
from schema.temporal_ids import schedule_id, trigger_workflow_id

log = logging.getLogger("cronpilot.reconcile")

# Longer than any create takes between making its schedule and committing its row.
ORPHAN_GRACE = timedelta(minutes=2)
# Preview schedules of /api/tasks/validate live for a second; older ones were left behind.
PREVIEW_GRACE = timedelta(minutes=10)


@dataclass
class ReconcileReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # One-time tasks whose run_at passed without their run: caught up or marked missed.
    settled: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    # Tasks it could not handle this time (logged); the next pass tries again.
    failed: list[str] = field(default_factory=list)


async def reconcile(
    sessions: async_sessionmaker[AsyncSession],
    client: Client,
    task_queue: str,
    *,
    orphan_grace: timedelta = ORPHAN_GRACE,
    preview_grace: timedelta = PREVIEW_GRACE,
) -> ReconcileReport:
    """Create missing schedules, update drifted ones, delete orphans, settle one-time tasks
    that can no longer run on time, and sweep left-over preview schedules."""
    report = ReconcileReport()
    # Schedules first: a task created after this listing has its row when rows are read.
    existing = await scheduling.schedule_ids(client)
    async with sessions() as session:
        wanted = await crud.scheduled_task_ids(session)
    for task_id in sorted(wanted | existing.keys()):
        try:
            async with sessions() as session:
                await _reconcile_task(session, client, task_queue, task_id, orphan_grace, report)
                await session.commit()
        except Exception:  # one task's trouble must not stop the others
            log.exception("reconcile of task %s failed", task_id)
            report.failed.append(schedule_id(task_id))
    await _reconcile_triggers(sessions, client, task_queue, orphan_grace, report)
    report.previews = await scheduling.sweep_previews(client, preview_grace)
    return report


async def _reconcile_triggers(
    sessions: async_sessionmaker[AsyncSession],
    client: Client,
    task_queue: str,
    orphan_grace: timedelta,
    report: ReconcileReport,
) -> None:
    """Every trigger task's workflow runs with the task as saved (told again each pass);
    a trigger workflow whose task is gone is stopped."""
    running = await triggers.running_triggers(client)
    async with sessions() as session:
        wanted = await crud.trigger_task_ids(session)
    for task_id in sorted(wanted | running.keys()):
        name = trigger_workflow_id(task_id)
        try:
            async with sessions() as session:
                task = await crud.lock_task(session, task_id=task_id)
                now = utcnow()
                if task is None or not crud.owns_trigger_workflow(task):
                    started = running.get(task_id)
                    if started is None:
                        continue
                    if task is None and _younger(started, now, orphan_grace):
                        continue  # its task's create may not have committed yet
                    if task is None:  # as a delete does: its queue and runs end too
                        await triggers.cancel(client, task_id)
                    else:
                        await triggers.stop(client, task_id, "reconciled: not a trigger task")
                    report.deleted.append(name)
                    continue
                scheduled = ScheduledTask.of(task)
                # Asked one by one (the list may still show a workflow that just ended).
                alive = await triggers.is_running(client, task_id)
                if alive and await triggers.in_line(client, scheduled):
                    continue
                await triggers.configure(client, scheduled, task_queue)
                (report.updated if alive else report.created).append(name)
                await session.commit()
        except Exception:  # one task's trouble must not stop the others
            log.exception("reconcile of trigger task %s failed", task_id)
            report.failed.append(name)


async def _reconcile_task(
    session: AsyncSession,
    client: Client,
    task_queue: str,
    task_id: uuid.UUID,
    orphan_grace: timedelta,
    report: ReconcileReport,
) -> None:
    task = await crud.lock_task(session, task_id=task_id)
    description = await scheduling.describe(client, task_id)
    now = utcnow()
    name = schedule_id(task_id)
    if task is None or not crud.owns_schedule(task):
        if description is None:
            return
        if task is None and _younger(description.info.created_at, now, orphan_grace):
            return  # its task's create may not have committed yet
        await scheduling.delete_schedule(client, task_id)
        report.deleted.append(name)
        return
    scheduled = ScheduledTask.of(task)
    if task.status == "active" and lifecycle.never_fires(scheduled, description, now):
        outcome = await lifecycle.settle_past_due(session, client, task_queue, task, now=now)
        log.warning("one-time task %s missed its run_at: %s", task_id, outcome)
        report.settled.append(name)
        return
    if description is None:
        await scheduling.create_schedule(client, scheduled, task_queue)
        report.created.append(name)
        return
    memo = scheduling.memo_of(client, description)
    if (
        memo.get("spec_hash") != scheduled.spec.spec_hash()
        or description.schedule.state.paused != scheduled.paused
    ):
        verb = "paused" if scheduled.paused else "active"
        await scheduling.sync_schedule(
            client, scheduled, task_queue, note=f"reconciled: the task is {verb}"
        )
        report.updated.append(name)


def _younger(created_at: datetime, now: datetime, grace: timedelta) -> bool:
    return now - created_at < grace
