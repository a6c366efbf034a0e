"""Events: ``POST /api/events`` starts the user's event-trigger tasks for that name."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import triggers
from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser, SessionDep, StateDep
from schema.triggers import MAX_DELIVERY_ID_CHARS, EventName, payload_problem

router = APIRouter(prefix="/api/events", tags=["events"], route_class=CheckedJsonRoute)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: EventName = Field(description="The event's name, say order.created.")
    payload: Any = Field(None, description="Any JSON; the runs' `payload`.")
    id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_DELIVERY_ID_CHARS,
        description="Makes the event idempotent: sent again with the same id, it starts "
        "each task once. Default: a new id each time.",
    )

    @field_validator("payload")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        problem = payload_problem(value)
        if problem:
            raise ValueError(f"at {'.'.join(map(str, problem[0])) or 'the top'}: {problem[1]}")
        return value


class EventAccepted(BaseModel):
    matched: int = Field(description="How many of your active event-trigger tasks it started.")
    event_id: str
    workflow_ids: list[str] = Field(description="The runs it became, one per task.")


@router.post("", status_code=202)
async def post_event(
    body: EventIn, user: CurrentUser, session: SessionDep, state: StateDep
) -> EventAccepted:
    """Start every active event-trigger task of yours whose `event` is `name`. Answered once
    Temporal accepted each delivery (503 when it is unreachable: send it again with the
    same `id`)."""
    event_id = body.id or f"event-{uuid.uuid4()}"
    outcome = await triggers.deliver_event(
        session,
        state.temporal,
        state.settings.task_queue,
        user_id=user.id,
        name=body.name,
        payload=body.payload,
        event_id=f"api:{event_id}",
        depth=1,
    )
    return EventAccepted(matched=outcome.matched, event_id=event_id, workflow_ids=outcome.started)
