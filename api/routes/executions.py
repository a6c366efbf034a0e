"""Execution history routes: a task's runs, newest first, and one run in full."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import scheduling
from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser, SessionDep, SettingsDep, StateDep
from api.errors import Conflict, Invalid, NotFound
from api.routes.tasks import INSTANT, RunStarted, bounded_instant, start_now
from schema import crud
from schema.executions import ExecutionPublic, ExecutionStatus, ExecutionSummary, LogEntry
from schema.orm import TaskExecution, User
from schema.settings import Settings
from schema.temporal_ids import MISSED_RUN_ID, WebUi

log = logging.getLogger("cronpilot.api")
router = APIRouter(tags=["executions"], route_class=CheckedJsonRoute)
LIVE_LOG_TIMEOUT = timedelta(seconds=3)


class ExecutionPage(BaseModel):
    items: list[ExecutionSummary]
    next_cursor: str | None


def _ui_url(execution: TaskExecution, settings: Settings) -> str:
    ui = WebUi(settings.temporal_ui_url, settings.temporal_namespace)
    if execution.run_id == MISSED_RUN_ID:  # a run that never happened has no workflow
        return ui.task_runs(execution.task_id)
    return ui.workflow(execution.workflow_id, execution.run_id)


def execution_summary(execution: TaskExecution, settings: Settings) -> ExecutionSummary:
    """An execution row as lists show it, with its link into the Temporal Web UI."""
    return _shown(ExecutionSummary, execution, settings)


def execution_public(execution: TaskExecution, settings: Settings) -> ExecutionPublic:
    """An execution row in full, with its link into the Temporal Web UI."""
    return _shown(ExecutionPublic, execution, settings)


Shown = TypeVar("Shown", bound=ExecutionSummary)


def _shown(model: type[Shown], execution: TaskExecution, settings: Settings) -> Shown:
    fields = (name for name in model.model_fields if name != "temporal")
    return model.model_validate(
        {
            **{name: getattr(execution, name) for name in fields},
            "temporal": {"ui_url": _ui_url(execution, settings)},
        }
    )


@router.get("/api/tasks/{task_id:uuid}/executions")
async def list_executions(
    task_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    status: ExecutionStatus | None = None,
    workflow_id: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """A task's executions, newest first, without their logs, result and steps (read one
    execution for those)."""
    if await crud.get_task(session, user_id=user.id, task_id=task_id) is None:
        raise NotFound("task")
    return await _page(
        session,
        settings,
        user_id=user.id,
        task_id=task_id,
        status=status,
        workflow_id=workflow_id,
        limit=limit,
        cursor=cursor,
    )


@router.get("/api/executions")
async def list_all_executions(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    status: ExecutionStatus | None = None,
    task_id: uuid.UUID | None = None,
    start: Annotated[str | None, Query(alias="from", json_schema_extra=INSTANT)] = None,
    to: Annotated[str | None, Query(json_schema_extra=INSTANT)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """All the user's executions, newest first, optionally of one task, with one status, or
    started in `[from, to)` (ISO 8601; a time without an offset is UTC). The web UI's
    calendar shows past runs from it, and its task list the runs in flight."""
    started_from = bounded_instant(start, "from")
    started_to = bounded_instant(to, "to")
    if started_from and started_to and started_to < started_from:
        raise Invalid([{"loc": ["query", "to"], "msg": "must be after from"}])
    return await _page(
        session,
        settings,
        user_id=user.id,
        task_id=task_id,
        status=status,
        started_from=started_from,
        started_to=started_to,
        limit=limit,
        cursor=cursor,
    )


async def _page(session: AsyncSession, settings: Settings, **filters: Any) -> ExecutionPage:
    """A page of executions as lists show them (``filters`` go to crud.list_executions)."""
    rows, next_cursor = await crud.list_executions(session, **filters)
    return ExecutionPage(
        items=[execution_summary(row, settings) for row in rows], next_cursor=next_cursor
    )


@router.get("/api/executions/{execution_id:uuid}")
async def read_execution(
    execution_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> ExecutionPublic:
    """One execution with its logs, result, error and steps. A running execution shows its
    log lines as they happen (read from its action's heartbeats in Temporal, about once a
    second)."""
    execution = await _owned(session, user, execution_id)
    public = execution_public(execution, state.settings)
    if execution.status == "running":
        live = await _live_logs(state.temporal, execution)
        known = {(entry.at, entry.message) for entry in public.logs}
        public.logs.extend(entry for entry in live if (entry.at, entry.message) not in known)
    return public


class ExecutionAccepted(BaseModel):
    execution_id: uuid.UUID
    workflow_id: str
    run_id: str
    status: str = Field(description="`cancelling`: the run ends `cancelled` shortly.")


@router.post("/api/executions/{execution_id:uuid}/cancel", status_code=202)
async def cancel_execution(
    execution_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> ExecutionAccepted:
    """Cancel a running run: it ends `cancelled`, keeping its logs. 409 when it already
    ended."""
    execution = await _owned(session, user, execution_id)
    if execution.status != "running":
        raise Conflict(f"the execution already ended ({execution.status})")
    handle = state.temporal.get_workflow_handle(execution.workflow_id, run_id=execution.run_id)
    try:
        await handle.cancel(rpc_timeout=scheduling.RPC_TIMEOUT)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:  # ended meanwhile; its record follows
            raise Conflict("the execution already ended") from error
        raise
    return ExecutionAccepted(
        execution_id=execution.id,
        workflow_id=execution.workflow_id,
        run_id=execution.run_id,
        status="cancelling",
    )


@router.post("/api/executions/{execution_id:uuid}/rerun", status_code=202)
async def rerun_execution(
    execution_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> RunStarted:
    """Run the task again with that run's payload, like run now (trigger `manual`, the
    task's overlap policy applies); the new execution's `rerun_of` is this one's id."""
    execution = await _owned(session, user, execution_id)
    payload = await _payload_of(state.temporal, execution)
    task_id, rerun_of = execution.task_id, execution.id
    await session.commit()  # ends the read: the run starts under the task's lock, anew
    return await start_now(task_id, user, session, state, payload=payload, rerun_of=rerun_of)


async def _owned(session: AsyncSession, user: User, execution_id: uuid.UUID) -> TaskExecution:
    execution = await crud.get_execution(session, user_id=user.id, execution_id=execution_id)
    if execution is None:
        raise NotFound("execution")
    return execution


async def _payload_of(client: Client, execution: TaskExecution) -> Any:
    """The payload the run started with. Scheduled and manual runs have none; a trigger's
    run keeps it in its Temporal history, for as long as the namespace retains it."""
    if execution.run_id == MISSED_RUN_ID:
        return None
    if execution.trigger in ("schedule", "manual") and execution.rerun_of is None:
        return None
    handle = client.get_workflow_handle(execution.workflow_id, run_id=execution.run_id)
    try:
        async for event in handle.fetch_history_events(rpc_timeout=scheduling.RPC_TIMEOUT):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [run_input] = await client.data_converter.decode(payloads)
            return run_input.get("payload") if isinstance(run_input, dict) else None
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
    raise Conflict("the run's payload is no longer kept by Temporal; it cannot be rerun")


async def _live_logs(client: Client, execution: TaskExecution) -> list[LogEntry]:
    """Log lines a running action has heartbeated so far; none when Temporal cannot say."""
    handle = client.get_workflow_handle(execution.workflow_id, run_id=execution.run_id)
    try:
        description = await handle.describe(rpc_timeout=LIVE_LOG_TIMEOUT)
        entries: list[LogEntry] = []
        for pending in description.raw_description.pending_activities:
            details = await client.data_converter.decode(pending.heartbeat_details.payloads)
            if details and isinstance(details[0], dict):
                entries.extend(LogEntry.model_validate(e) for e in details[0].get("logs", []))
        return entries
    except Exception:  # the stored record is still an answer
        log.info("no live logs for %s", execution.workflow_id, exc_info=True)
        return []
