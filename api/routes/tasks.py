"""Task routes: CRUD, pause/resume/run, validation, upcoming runs and bulk operations."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from cron_descriptor import get_description
from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from activities.history import HistoryActivities
from api import lifecycle, scheduling
from api.bodies import CheckedJsonRoute
from api.deps import AppState, CurrentUser, SessionDep, StateDep
from api.errors import Invalid, NotFound, Problem, connection_lost, validation_errors
from schema import crud
from schema.actions import STORED
from schema.cron import canonical, uneven_steps
from schema.orm import Task, User
from schema.settings import Settings
from schema.tasks import (
    LATEST,
    RunRef,
    TaskCreate,
    TaskPublic,
    TaskSpec,
    TaskStatus,
    TaskType,
    TaskUpdate,
    utc_instant,
)
from schema.temporal_ids import WebUi, schedule_id

log = logging.getLogger("cronpilot.api")
router = APIRouter(prefix="/api/tasks", tags=["tasks"], route_class=CheckedJsonRoute)
MAX_UPCOMING_RANGE = timedelta(days=366)
NO_NUL = r"^[^\x00]*$"
INSTANT: dict[str, Any] = {"format": "date-time"}


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None


class RunStarted(BaseModel):
    execution_id: uuid.UUID = Field(description="Read it at GET /api/executions/{id}.")
    workflow_id: str
    run_id: str
    ui_url: str = Field(description="The run in the Temporal Web UI.")


class UpcomingRun(BaseModel):
    task_id: uuid.UUID
    task_name: str
    at: datetime = Field(description="When it fires, in UTC.")
    local_at: datetime = Field(description="The same instant in the task's time zone.")
    timezone: str = Field(description="The task's time zone.")


class UpcomingRuns(BaseModel):
    items: list[UpcomingRun]


class ValidationReport(BaseModel):
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[str]
    next_runs: list[datetime] = Field(description="The next 5 runs, in UTC.")
    next_runs_local: list[datetime] = Field(
        default_factory=list, description="The same runs in the schedule's time zone."
    )
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
    ui = WebUi(settings.temporal_ui_url, settings.temporal_namespace)
    has_schedule = crud.owns_schedule(task)
    data = crud.task_spec(task).model_dump()
    fields = {
        **data,
        "id": task.id,
        "status": task.status,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "next_run_at": task.next_run_at,
        "last_run_at": task.last_run_at,
        "last_status": task.last_status,
        "run_count": task.run_count,
        "failure_count": task.failure_count,
        "temporal": {
            "schedule_id": schedule_id(task.id) if has_schedule else None,
            "workflow_id_prefix": schedule_id(task.id),
            "ui_url": ui.schedule(schedule_id(task.id)) if has_schedule else ui.task_runs(task.id),
        },
    }
    # Read as stored: a task saved before a check was added still shows.
    return TaskPublic.model_validate(fields, context=STORED)


async def _owned_task(session: AsyncSession, user: User, task_id: uuid.UUID) -> Task:
    task = await crud.get_task(session, user_id=user.id, task_id=task_id)
    if task is None:
        raise NotFound("task")
    return task


@contextlib.asynccontextmanager
async def _locked(
    state: AppState,
    session: AsyncSession,
    user: User,
    task_id: uuid.UUID,
    *,
    shared: bool = False,
) -> AsyncIterator[Task]:
    """The user's task, locked (in this process, then in the database) until the block
    commits: one task's changes go one at a time, so its row and its schedule agree."""
    async with state.task_locks.hold(task_id, shared=shared):
        try:
            task = await crud.lock_task(session, task_id=task_id, user_id=user.id, shared=shared)
            if task is None:
                raise NotFound("task")
            yield task
            await session.commit()
        except BaseException:
            await session.rollback()  # the database lock goes with the in-process one
            raise


@router.post("", status_code=201)
async def create_task(
    body: TaskCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Create a task and its Temporal schedule."""
    task = await lifecycle.create(
        session, state.temporal, state.settings.task_queue, user=user, spec=body
    )
    try:
        await lifecycle.refresh_next_run(task, state.temporal)
        await session.commit()
    except BaseException:
        # Undo the schedule; if Temporal is down too, the periodic reconcile removes it.
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
    tag: Annotated[str | None, Query(max_length=50, pattern=NO_NUL)] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
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
    start: Annotated[str | None, Query(alias="from", json_schema_extra=INSTANT)] = None,
    to: Annotated[str | None, Query(json_schema_extra=INSTANT)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UpcomingRuns:
    """Upcoming runs of the user's active tasks, as Temporal will fire them, each in UTC and
    in its task's time zone. `from` defaults to now, `to` to 7 days later (366 at most);
    both lie between 1970 and 2100, and a time without an offset is UTC."""
    begin = bounded_instant(start, "from") or datetime.now(UTC)
    end = bounded_instant(to, "to") or min(begin + timedelta(days=7), LATEST)
    if end < begin or end - begin > MAX_UPCOMING_RANGE:
        raise Invalid([{"loc": ["query", "to"], "msg": "must be after from, within 366 days"}])
    tasks = await crud.active_tasks(session, user_id=user.id)
    runs = await scheduling.upcoming(state.temporal, tasks, begin, end, limit)
    items = []
    for task, at in runs:
        zone = _zone_of(task)
        items.append(
            UpcomingRun(
                task_id=task.id,
                task_name=task.name,
                at=at,
                local_at=at.astimezone(ZoneInfo(zone)),
                timezone=zone,
            )
        )
    return UpcomingRuns(items=items)


def _zone_of(task: Task) -> str:
    schedule = crud.task_spec(task).schedule
    return schedule.timezone if schedule else "UTC"


def bounded_instant(text: str | None, name: str) -> datetime | None:
    """A query's ISO 8601 instant in UTC (UTC when it has no offset), within 1970-2100."""
    if text is None:
        return None
    try:
        return utc_instant(datetime.fromisoformat(text), "UTC")
    except ValueError as error:  # not ISO 8601, or out of bounds
        message = f"must be an ISO 8601 time; {error}"
        raise Invalid([{"loc": ["query", name], "msg": message}]) from None


@router.post("/validate")
async def validate_task(
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    body: Annotated[dict[str, Any], Body()],
) -> ValidationReport:
    """Check a task without saving it: errors, next runs, the schedule in words, DST warnings."""
    now = datetime.now(UTC)
    try:
        spec = TaskCreate.model_validate(body)
        lifecycle.require_available(spec)
        lifecycle.require_future_run(spec, now)
    except ValidationError as error:
        return _invalid_report(validation_errors(error.errors(), ("body",)))
    except Invalid as error:
        return _invalid_report(error.errors)
    chain_errors = await lifecycle.chain_task_problems(session, user.id, spec)
    if chain_errors:
        return _invalid_report(chain_errors)
    if spec.type == "trigger":  # started by deliveries, not by a clock: no next runs
        return ValidationReport(
            valid=True, errors=[], warnings=[], next_runs=[], description=_describe(spec)
        )
    try:
        preview = await scheduling.preview(state.temporal, spec, state.settings.task_queue, now)
    except scheduling.ScheduleRefused as error:
        message = f"Temporal refused this schedule: {error}"
        return _invalid_report([{"loc": ["body", "schedule"], "msg": message}])
    schedule = spec.schedule
    assert schedule is not None
    zone = ZoneInfo(schedule.timezone)
    warnings = list(preview.dst_warnings)
    if schedule.cron:
        warnings.extend(uneven_steps(schedule.cron))
    if not preview.next_runs:
        warnings.append(
            f"it does not fire within the next {scheduling.PREVIEW_DAYS} days"
            + (" before its end_at" if schedule.end_at else "")
        )
    return ValidationReport(
        valid=True,
        errors=[],
        warnings=warnings,
        next_runs=preview.next_runs,
        next_runs_local=[at.astimezone(zone) for at in preview.next_runs],
        description=_describe(spec),
    )


def _invalid_report(errors: list[dict[str, Any]]) -> ValidationReport:
    """A report of errors; those that mean "this schedule never fires" are warnings too."""
    warnings = [
        f"this schedule never fires: {error['msg']}"
        for error in errors
        if "never fires" in error["msg"] or "a schedule that ended" in error["msg"]
    ]
    return ValidationReport(
        valid=False, errors=errors, warnings=warnings, next_runs=[], description=None
    )


def _describe(spec: TaskSpec) -> str | None:
    """The schedule in words, as Temporal will fire it; None when there are no words."""
    trigger = spec.trigger
    if trigger is not None:
        if trigger.kind == "email":
            return f"Polls {trigger.imap_host} every {trigger.poll_seconds} s"
        if trigger.kind == "event":
            return f"Runs on each {trigger.event} event"
        return "Runs on each webhook delivery"
    schedule = spec.schedule
    if schedule is None:
        return None
    if schedule.run_at:
        local = schedule.run_at.astimezone(ZoneInfo(schedule.timezone))
        return f"Once, at {local.isoformat()} ({schedule.timezone})"
    if schedule.interval_seconds:
        return f"Every {schedule.interval_seconds} seconds"
    assert schedule.cron is not None
    try:
        words = get_description(canonical(schedule.cron))
    except Exception:  # the describer's own limits: no words rather than an error
        log.info("no description for cron %r", schedule.cron, exc_info=True)
        return None
    return f"{words} ({schedule.timezone})"


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
            in_flight = []
            async with state.sessions() as session, _locked(state, session, user, task_id) as task:
                if operation == "delete":
                    in_flight = await lifecycle.delete(session, state.temporal, task)
                else:
                    await _set_paused(task, user, session, state, paused=operation == "pause")
            await lifecycle.stop_runs(state.temporal, task_id, in_flight)
            results.append(BulkResult(id=task_id, ok=True))
        except Exception as error:  # one id's trouble is its own: the others go on
            results.append(BulkResult(id=task_id, ok=False, error=_bulk_error(error)))
    return BulkResults(results=results)


def _bulk_error(error: Exception) -> str:
    """One id's failure in a bulk operation, in the words a single request would use."""
    if isinstance(error, Problem):
        return error.detail
    if isinstance(error, scheduling.ScheduleRefused):
        return f"Temporal refused this schedule: {error}"
    if isinstance(error, RPCError):
        return f"Temporal: {error.message}"
    if connection_lost(error):
        return "the database is unreachable; try again shortly"
    if isinstance(error, DBAPIError):
        return f"database error: {type(error.orig).__name__}"
    correlation_id = uuid.uuid4().hex
    log.error("bulk operation failed [correlation_id=%s]", correlation_id, exc_info=error)
    return f"unexpected error; logged with correlation id {correlation_id}"


@router.get("/{task_id:uuid}")
async def read_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Read one task."""
    return task_public(await _owned_task(session, user, task_id), state.settings)


@router.put("/{task_id:uuid}")
async def replace_task(
    task_id: uuid.UUID, body: TaskCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Replace a task's definition; its schedule is updated in place."""
    async with _locked(state, session, user, task_id) as task:
        await lifecycle.save_spec(session, state.temporal, state.settings.task_queue, task, body)
    return task_public(task, state.settings)


@router.patch("/{task_id:uuid}")
async def update_task(
    task_id: uuid.UUID, body: TaskUpdate, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Change some fields (JSON merge patch); the merged task is validated as a whole."""
    async with _locked(state, session, user, task_id) as task:
        merged = _merge_patch(
            crud.task_spec(task).model_dump(mode="json"), body.model_dump(exclude_unset=True)
        )
        spec = TaskCreate.model_validate(merged)
        await lifecycle.save_spec(session, state.temporal, state.settings.task_queue, task, spec)
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


@router.delete("/{task_id:uuid}", status_code=204)
async def delete_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    """Delete a task, its schedule and its history; a second delete is a 404."""
    async with _locked(state, session, user, task_id) as task:
        in_flight = await lifecycle.delete(session, state.temporal, task)
    await lifecycle.stop_runs(state.temporal, task_id, in_flight)
    return Response(status_code=204)


@router.post("/{task_id:uuid}/pause")
async def pause_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Pause a task's schedule; run now still works."""
    async with _locked(state, session, user, task_id) as task:
        await _set_paused(task, user, session, state, paused=True)
    return task_public(task, state.settings)


@router.post("/{task_id:uuid}/resume")
async def resume_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> TaskPublic:
    """Resume a paused task's schedule. A one-time task whose run_at passed meanwhile runs
    at once within its catch-up window, and is otherwise `failed` with a `Missed` run."""
    async with _locked(state, session, user, task_id) as task:
        await _set_paused(task, user, session, state, paused=False)
    return task_public(task, state.settings)


async def _set_paused(
    task: Task, user: User, session: AsyncSession, state: StateDep, *, paused: bool
) -> None:
    verb = "paused" if paused else "resumed"
    await lifecycle.set_paused(
        session,
        state.temporal,
        state.settings.task_queue,
        task,
        paused=paused,
        note=f"{verb} by {user.name} via the API",
    )


@router.post("/{task_id:uuid}/run", status_code=202)
async def run_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> RunStarted:
    """Start a run now, recorded as manual; works while the task is paused. The task's
    overlap policy applies to the runs in flight: `skip` answers 409 while one runs,
    `buffer_one`/`buffer_all` queue this run behind them, `cancel_other` cancels them first,
    `terminate_other` terminates them, `allow_all` runs at once."""
    return await start_now(task_id, user, session, state)


async def start_now(
    task_id: uuid.UUID,
    user: User,
    session: AsyncSession,
    state: AppState,
    *,
    payload: Any = None,
    rerun_of: uuid.UUID | None = None,
) -> RunStarted:
    """Run now (or rerun), under the task's overlap policy."""

    async def _start(task: Task, shared: bool) -> lifecycle.RunStarted:
        return await lifecycle.run_now(
            session,
            state.temporal,
            state.settings.task_queue,
            task,
            shared=shared,
            payload=payload,
            rerun_of=rerun_of,
        )

    started = None
    # Runs that may overlap only need the task to stay as it is while one starts (a shared
    # lock); any other policy looks at the runs in flight, one request at a time.
    async with _locked(state, session, user, task_id, shared=True) as task:
        if lifecycle.overlap_of(task) == "allow_all":
            started = await _start(task, shared=True)
    if started is None:
        async with _locked(state, session, user, task_id) as task:
            started = await _start(task, shared=False)
    if started.terminated:
        # The run started: a failure here must not make a client retry it. The hourly
        # system run settles these records anyway.
        history = HistoryActivities(state.sessions, state.temporal)
        try:
            await history.settle_runs(
                [RunRef(workflow_id=r.workflow_id, run_id=r.run_id) for r in started.terminated]
            )
        except Exception:
            log.warning("terminated runs left for the hourly settling", exc_info=True)
    ui = WebUi(state.settings.temporal_ui_url, state.settings.temporal_namespace)
    return RunStarted(
        execution_id=started.execution_id,
        workflow_id=started.workflow_id,
        run_id=started.run_id,
        ui_url=ui.workflow(started.workflow_id, started.run_id),
    )
