"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from api.bodies import CheckedJsonRoute
from api.deps import StateDep
from api.errors import problem_response
from schema import crud

router = APIRouter(tags=["health"], route_class=CheckedJsonRoute)
CHECK_TIMEOUT = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(state: StateDep) -> dict[str, str] | Response:
    """Both the database and Temporal answer and the start-up reconcile ran; 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        async with state.sessions() as session:
            await asyncio.wait_for(crud.ping(session), CHECK_TIMEOUT)
        checks["database"] = "ok"
    except Exception as error:  # any failure means not ready
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        await state.temporal.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_TIMEOUT)
        )
        checks["temporal"] = "ok"
    except Exception as error:  # any failure means not ready
        checks["temporal"] = f"unreachable: {type(error).__name__}"
    checks["schedules"] = "ok" if state.reconciled.is_set() else "reconciling"
    if any(value != "ok" for value in checks.values()):
        detail = "; ".join(f"{name} {value}" for name, value in checks.items())
        return problem_response(503, f"not ready: {detail}")
    return {"status": "ready", **checks}


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
