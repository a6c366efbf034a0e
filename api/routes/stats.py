"""Statistics routes: per task and per user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel

from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser, SessionDep
from api.errors import NotFound
from schema import crud

router = APIRouter(tags=["stats"], route_class=CheckedJsonRoute)
COUNTED = ("succeeded", "failed", "skipped", "timed_out", "cancelled", "running")


class WindowCounts(BaseModel):
    total: int
    succeeded: int
    failed: int
    skipped: int


class TaskStats(BaseModel):
    total: int
    succeeded: int
    failed: int
    skipped: int
    success_rate: float | None
    avg_duration_ms: float | None
    p95_duration_ms: int | None
    last_run_at: datetime | None
    next_run_at: datetime | None
    last_24h: WindowCounts


class UserStats(BaseModel):
    tasks: dict[str, int]
    executions: dict[str, int]


def _window(counts: dict[str, int]) -> WindowCounts:
    return WindowCounts(
        total=sum(counts.values()),
        succeeded=counts.get("succeeded", 0),
        # A timed-out run is a failed run as far as the totals are concerned.
        failed=counts.get("failed", 0) + counts.get("timed_out", 0),
        skipped=counts.get("skipped", 0),
    )


@router.get("/api/tasks/{task_id:uuid}/stats")
async def task_stats(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> TaskStats:
    """Run counts, success rate and durations of one task."""
    task = await crud.get_task(session, user_id=user.id, task_id=task_id)
    if task is None:
        raise NotFound("task")
    overall = _window(await crud.execution_counts(session, user_id=user.id, task_id=task.id))
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    recent = await crud.execution_counts(session, user_id=user.id, task_id=task.id, since=day_ago)
    average, p95 = await crud.duration_stats(session, task_id=task.id)
    decided = overall.succeeded + overall.failed
    return TaskStats(
        **overall.model_dump(),
        success_rate=round(overall.succeeded / decided, 4) if decided else None,
        avg_duration_ms=round(average, 1) if average is not None else None,
        p95_duration_ms=p95,
        last_run_at=task.last_run_at,
        next_run_at=task.next_run_at,
        last_24h=_window(recent),
    )


@router.get("/api/stats")
async def user_stats(user: CurrentUser, session: SessionDep) -> UserStats:
    """The user's tasks by status and executions by status."""
    tasks = dict.fromkeys(("active", "paused", "completed", "failed"), 0)
    tasks.update(await crud.task_counts(session, user_id=user.id))
    executions = dict.fromkeys(COUNTED, 0)
    executions.update(await crud.execution_counts(session, user_id=user.id))
    return UserStats(tasks=tasks, executions=executions)
