"""``POST /api/resume/{token}``: resume a chain's wait step through its signed URL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.bodies import CheckedJsonRoute
from api.deps import StateDep
from api.errors import Conflict, Invalid, NotFound, Problem
from schema import crud
from schema.chains import RESUME_UPDATE
from schema.crypto import read_resume_token
from schema.temporal_ids import TASK_ID_ATTRIBUTE
from schema.triggers import payload_problem

router = APIRouter(tags=["chains"], route_class=CheckedJsonRoute)
RPC_TIMEOUT = timedelta(seconds=10)


class Resumed(BaseModel):
    step_id: str
    status: str


@router.post(
    "/api/resume/{token}",
    status_code=202,
    openapi_extra={"security": []},
    responses={
        404: {"description": "Unknown token, or the chain's task was deleted."},
        409: {"description": "The step was resumed already, timed out, or its chain ended."},
        413: {"description": "The body is over WEBHOOK_MAX_BODY_BYTES."},
        503: {"description": "Temporal (or its worker) did not take the resume; retry."},
    },
)
async def resume(token: str, request: Request, state: StateDep) -> Resumed:
    """Resume a chain step waiting for a webhook. No API key: the token is the credential
    (signed, single use). The JSON body (or `{"raw": text}`) becomes the step's output;
    a step not reached yet takes it and goes on at once when the chain gets there."""
    settings = state.settings
    named = read_resume_token(settings, token)
    if named is None:
        raise NotFound("resume token")
    workflow_id, step_id = named
    body = await request.body()
    if len(body) > settings.webhook_max_body_bytes:
        raise Problem(413, f"the body exceeds {settings.webhook_max_body_bytes} bytes")
    output = _output(body)
    handle = state.temporal.get_workflow_handle(workflow_id)
    try:
        chain = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise Conflict("the chain of this step has ended") from None
        raise
    # The chain of a deleted task: as if there never was one (its runs were cancelled).
    task_id = chain.typed_search_attributes.get(TASK_ID_ATTRIBUTE)
    async with state.sessions() as session:
        if task_id is None or not await crud.task_exists(session, task_id=uuid.UUID(task_id)):
            raise NotFound("resume token")
    if chain.status != WorkflowExecutionStatus.RUNNING:
        raise Conflict("the chain of this step has ended")
    try:
        await handle.execute_update(RESUME_UPDATE, args=[step_id, output], rpc_timeout=RPC_TIMEOUT)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise Conflict(message) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Problem(503, "the chain did not answer in time (no worker?); try again") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise Conflict("the chain of this step has ended") from None
        raise
    return Resumed(step_id=step_id, status="resumed")


def _output(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    try:
        output: Any = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        output = {"raw": text}
    problem = payload_problem(output)
    if problem:
        raise Invalid([{"loc": ["body", *problem[0]], "msg": problem[1]}])
    return output
