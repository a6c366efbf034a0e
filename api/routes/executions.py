"""Execution history routes: a task's runs, newest first, and one run in full."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.errors import NotFound
from schema import crud
from schema.executions import ExecutionPublic, ExecutionStatus
from schema.orm import TaskExecution
from schema.settings import Settings
from schema.temporal_ids import MISSED_RUN_ID, WebUi

router = APIRouter(tags=["executions"])


class ExecutionPage(BaseModel):
    items: list[ExecutionPublic]
    next_cursor: str | None


def execution_public(execution: TaskExecution, settings: Settings) -> ExecutionPublic:
    """An execution row with its link into the Temporal Web UI."""
    ui = WebUi(settings.temporal_ui_url, settings.temporal_namespace)
    if execution.run_id == MISSED_RUN_ID:  # a run that never happened has no workflow
        ui_url = ui.task_runs(execution.task_id)
    else:
        ui_url = ui.workflow(execution.workflow_id, execution.run_id)
    return ExecutionPublic.model_validate(
        {
            **{c: getattr(execution, c) for c in ExecutionPublic.model_fields if c != "temporal"},
            "temporal": {"ui_url": ui_url},
        }
    )


@router.get("/api/tasks/{task_id}/executions")
async def list_executions(
    task_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    status: ExecutionStatus | None = None,
    workflow_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """A task's executions, newest first."""
    if await crud.get_task(session, user_id=user.id, task_id=task_id) is None:
        raise NotFound("task")
    rows, next_cursor = await crud.list_executions(
        session,
        user_id=user.id,
        task_id=task_id,
        status=status,
        workflow_id=workflow_id,
        limit=limit,
        cursor=cursor,
    )
    return ExecutionPage(
        items=[execution_public(row, settings) for row in rows], next_cursor=next_cursor
    )


@router.get("/api/executions/{execution_id}")
async def read_execution(
    execution_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> ExecutionPublic:
    """One execution with its logs, result, error and steps."""
    execution = await crud.get_execution(session, user_id=user.id, execution_id=execution_id)
    if execution is None:
        raise NotFound("execution")
    return execution_public(execution, settings)
