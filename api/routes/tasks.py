"""Task routes: CRUD, pause/resume/run, validation, upcoming runs and bulk operations."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from cron_descriptor import get_description
from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from activities.registry import ACTIONS
from api import scheduling
from api.deps import CurrentUser, SessionDep, StateDep
from api.errors import Conflict, Invalid, NotFound, Problem, validation_errors
from api.scheduling import ScheduledTask
from schema import crud
from schema.orm import Task, User
from schema.settings import Settings
from schema.tasks import TaskCreate, TaskPublic, TaskSpec, TaskStatus, TaskType, TaskUpdate

router = APIRouter(prefix="/api/tasks", tags=["tasks"])
MAX_UPCOMING_RANGE = timedelta(days=366)


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None


class RunStarted(BaseModel):
    workflow_id: str
    run_id: str


class UpcomingRun(BaseModel):
    task_id: uuid.UUID
    task_name: str
    at: datetime


class UpcomingRuns(BaseModel):
    items: list[UpcomingRun]


class ValidationReport(BaseModel):
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[str]
    next_runs: list[datetime]
    description: str | None


class BulkIds(BaseModel):
    ids: list[uuid.UUID] = Field(min_length=1, max_length=200)


class BulkResult(BaseModel):
    id: uuid.UUID
    ok: bool
    error: str | None = None


class BulkResults(BaseModel):
    results: list[BulkResult]


def task_public(task: Task, settings: Settings) -> TaskPublic:
    """A task row as the API shows it, with links into the Temporal Web UI."""
    schedule_id = f"task-{task.id}" if task.status in ("active", "paused") else None
    namespace = f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
    if schedule_id:
        ui_url = f"{namespace}/schedules/{schedule_id}"
    else:
        ui_url = f"{namespace}/workflows?query=" + quote(f'CronpilotTaskId="{task.id}"')
    data = crud.task_spec(task).model_dump()
    return TaskPublic(
        **data,
        id=task.id,
        status=task.status,
        created_at=task.created_at,
        updated_at=task.updated_at,
        next_run_at=task.next_run_at,
        last_run_at=task.last_run_at,
        last_status=task.last_status,
        run_count=task.run_count,
        failure_count=task.failure_count,
        temporal={
            "schedule_id": schedule_id,
            "workflow_id_prefix": f"task-{task.id}",
            "ui_url": ui_url,
        },
    )


def _require_available(spec: TaskSpec) -> None:
    if spec.action.type not in ACTIONS:
        message = f"the {spec.action.type} action is not available yet"
        raise Invalid([{"loc": ["body", "action", "type"], "msg": message}])


def _require_future_run(spec: TaskSpec, now: datetime) -> None:
    schedule = spec.schedule
    if spec.type == "one_time" and schedule and schedule.run_at and schedule.run_at <= now:
        raise Invalid([{"loc": ["body", "schedule", "run_at"], "msg": "must be in the future"}])


async def _owned_task(session: AsyncSession, user: User, task_id: uuid.UUID) -> Task:
    task = await crud.get_task(session, user_id=user.id, task_id=task_id)
    if task is None:
        raise NotFound("task")
    return task


async def _refresh_next_run(task: Task, temporal: Client) -> None:
    schedule = crud.task_spec(task).schedule
    if task.status != "active":
        task.next_run_at = None
    elif task.type == "one_time" and schedule and schedule.run_at:
        task.next_run_at = schedule.run_at
    else:
        task.next_run_at = await scheduling.next_run_at(temporal, task.id)


@router.post("", status_code=201)
async def create_task(
    body: TaskCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Create a task and its Temporal schedule."""
    _require_available(body)
    _require_future_run(body, datetime.now(UTC))
    task = await crud.create_task(session, user_id=user.id, spec=body)
    await scheduling.create_schedule(
        state.temporal, ScheduledTask.of(task), state.settings.task_queue
    )
    try:
        await _refresh_next_run(task, state.temporal)
        await session.commit()
    except BaseException:
        # Undo the schedule; if Temporal is down too, reconcile removes the orphan later.
        with contextlib.suppress(Exception):
            await scheduling.delete_schedule(state.temporal, task.id)
        raise
    return task_public(task, state.settings)


@router.get("")
async def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    status: TaskStatus | None = None,
    type: TaskType | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> TaskPage:
    """List the user's tasks, newest first."""
    tasks, next_cursor = await crud.list_tasks(
        session,
        user_id=user.id,
        status=status,
        task_type=type,
        tag=tag,
        q=q,
        limit=limit,
        cursor=cursor,
    )
    return TaskPage(items=[task_public(t, state.settings) for t in tasks], next_cursor=next_cursor)


@router.get("/upcoming")
async def upcoming_runs(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UpcomingRuns:
    """Upcoming runs of the user's active tasks, as Temporal will fire them."""
    start = _aware(start) or datetime.now(UTC)
    end = _aware(to) or start + timedelta(days=7)
    if end <= start or end - start > MAX_UPCOMING_RANGE:
        raise Invalid([{"loc": ["query", "to"], "msg": "must be after from, within 366 days"}])
    tasks = await crud.active_tasks(session, user_id=user.id)
    runs = await scheduling.upcoming(state.temporal, tasks, start, end, limit)
    return UpcomingRuns(
        items=[UpcomingRun(task_id=task.id, task_name=task.name, at=at) for task, at in runs]
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.post("/validate")
async def validate_task(
    user: CurrentUser,  # noqa: ARG001 - validation is for signed-in users only
    state: StateDep,
    body: Annotated[dict[str, Any], Body()],
) -> ValidationReport:
    """Check a task without saving it: errors, next runs, the schedule in words, DST warnings."""
    now = datetime.now(UTC)
    try:
        spec = TaskCreate.model_validate(body)
        _require_available(spec)
        _require_future_run(spec, now)
    except ValidationError as error:
        return ValidationReport(
            valid=False,
            errors=validation_errors(error.errors(), ("body",)),
            warnings=[],
            next_runs=[],
            description=None,
        )
    except Invalid as error:
        return ValidationReport(
            valid=False, errors=error.errors, warnings=[], next_runs=[], description=None
        )
    preview = await scheduling.preview(state.temporal, spec, state.settings.task_queue, now)
    return ValidationReport(
        valid=True,
        errors=[],
        warnings=preview.dst_warnings,
        next_runs=preview.next_runs,
        description=_describe(spec),
    )


def _describe(spec: TaskSpec) -> str | None:
    schedule = spec.schedule
    if schedule is None:
        return None
    if schedule.run_at:
        return f"Once, at {schedule.run_at.isoformat()}"
    if schedule.interval_seconds:
        return f"Every {schedule.interval_seconds} seconds"
    assert schedule.cron is not None
    return f"{get_description(schedule.cron)} ({schedule.timezone})"


@router.post("/bulk-delete")
async def bulk_delete(body: BulkIds, user: CurrentUser, state: StateDep) -> BulkResults:
    """Delete several tasks; each id gets its own result."""
    return await _bulk(body, user, state, "delete")


@router.post("/bulk-pause")
async def bulk_pause(body: BulkIds, user: CurrentUser, state: StateDep) -> BulkResults:
    """Pause several tasks; each id gets its own result."""
    return await _bulk(body, user, state, "pause")


@router.post("/bulk-resume")
async def bulk_resume(body: BulkIds, user: CurrentUser, state: StateDep) -> BulkResults:
    """Resume several tasks; each id gets its own result."""
    return await _bulk(body, user, state, "resume")


async def _bulk(
    body: BulkIds, user: User, state: StateDep, operation: Literal["delete", "pause", "resume"]
) -> BulkResults:
    results = []
    for task_id in dict.fromkeys(body.ids):
        try:
            async with state.sessions() as session:
                task = await _owned_task(session, user, task_id)
                if operation == "delete":
                    await _delete(task, session, state.temporal)
                else:
                    await _set_paused(
                        task, user, session, state.temporal, paused=operation == "pause"
                    )
            results.append(BulkResult(id=task_id, ok=True))
        except Problem as error:
            results.append(BulkResult(id=task_id, ok=False, error=error.detail))
    return BulkResults(results=results)


@router.get("/{task_id}")
async def read_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Read one task."""
    return task_public(await _owned_task(session, user, task_id), state.settings)


@router.put("/{task_id}")
async def replace_task(
    task_id: uuid.UUID, body: TaskCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Replace a task's definition; its schedule is updated in place."""
    task = await _owned_task(session, user, task_id)
    await _save_spec(task, body, session, state)
    return task_public(task, state.settings)


@router.patch("/{task_id}")
async def update_task(
    task_id: uuid.UUID, body: TaskUpdate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Change some fields (JSON merge patch); the merged task is validated as a whole."""
    task = await _owned_task(session, user, task_id)
    merged = _merge_patch(
        crud.task_spec(task).model_dump(mode="json"), body.model_dump(exclude_unset=True)
    )
    await _save_spec(task, TaskSpec.model_validate(merged), session, state)
    return task_public(task, state.settings)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null removes a member."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


async def _save_spec(task: Task, spec: TaskSpec, session: AsyncSession, state: StateDep) -> None:
    _require_available(spec)
    old = crud.task_spec(task)
    rescheduled = old.schedule != spec.schedule or task.status in ("completed", "failed")
    if rescheduled:
        _require_future_run(spec, datetime.now(UTC))
    crud.apply_spec(task, spec)
    if task.status in ("completed", "failed"):
        task.status = "active"
    await scheduling.upsert_schedule(
        state.temporal, ScheduledTask.of(task), state.settings.task_queue
    )
    await _refresh_next_run(task, state.temporal)
    await session.commit()


@router.delete("/{task_id}", status_code=204)
async def delete_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    """Delete a task, its schedule and its history."""
    await _delete(await _owned_task(session, user, task_id), session, state.temporal)
    return Response(status_code=204)


async def _delete(task: Task, session: AsyncSession, temporal: Client) -> None:
    await scheduling.delete_schedule(temporal, task.id)
    await session.delete(task)
    await session.commit()


@router.post("/{task_id}/pause")
async def pause_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Pause a task's schedule; run now still works."""
    task = await _owned_task(session, user, task_id)
    await _set_paused(task, user, session, state.temporal, paused=True)
    return task_public(task, state.settings)


@router.post("/{task_id}/resume")
async def resume_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Resume a paused task's schedule."""
    task = await _owned_task(session, user, task_id)
    await _set_paused(task, user, session, state.temporal, paused=False)
    return task_public(task, state.settings)


async def _set_paused(
    task: Task, user: User, session: AsyncSession, temporal: Client, *, paused: bool
) -> None:
    if task.status in ("completed", "failed"):
        raise Conflict(f"the task is {task.status}; update its schedule to run it again")
    if (task.status == "paused") == paused:
        return
    verb = "paused" if paused else "resumed"
    await scheduling.set_paused(
        temporal, task.id, paused=paused, note=f"{verb} by {user.name} via the API"
    )
    task.status = "paused" if paused else "active"
    await _refresh_next_run(task, temporal)
    await session.commit()


@router.post("/{task_id}/run", status_code=202)
async def run_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> RunStarted:
    """Start a run now, recorded as manual; works while the task is paused."""
    task = await _owned_task(session, user, task_id)
    workflow_id, run_id = await scheduling.start_run_now(
        state.temporal, ScheduledTask.of(task), state.settings.task_queue
    )
    return RunStarted(workflow_id=workflow_id, run_id=run_id)
