"""The current user."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser

router = APIRouter(tags=["users"], route_class=CheckedJsonRoute)


class UserPublic(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime


@router.get("/api/me")
async def read_me(user: CurrentUser) -> UserPublic:
    """Who the API key belongs to."""
    return UserPublic(id=user.id, name=user.name, created_at=user.created_at)
