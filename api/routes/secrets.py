"""Secrets: write-only values, per user, encrypted at rest; lists show names and dates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser, SessionDep, SettingsDep
from api.errors import NotFound
from schema import crud
from schema.crypto import SecretBox

router = APIRouter(prefix="/api/secrets", tags=["secrets"], route_class=CheckedJsonRoute)
SecretName = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class SecretWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=65536)


class SecretPublic(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(BaseModel):
    items: list[SecretPublic]


@router.put(
    "/{name}",
    responses={201: {"model": SecretPublic, "description": "Created: the name was new."}},
)
async def put_secret(
    name: SecretName,
    body: SecretWrite,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> SecretPublic:
    """Create or replace a secret; use it in configs as ``{{ secrets.NAME }}``."""
    encrypted = SecretBox(settings).encrypt(body.value)
    secret, created = await crud.put_secret(
        session, user_id=user.id, name=name, value_encrypted=encrypted
    )
    await session.commit()
    response.status_code = 201 if created else 200
    return SecretPublic(
        name=secret.name, created_at=secret.created_at, updated_at=secret.updated_at
    )


@router.get("")
async def list_secrets(user: CurrentUser, session: SessionDep) -> SecretList:
    """The user's secret names and dates, never values."""
    secrets = await crud.list_secrets(session, user_id=user.id)
    return SecretList(
        items=[
            SecretPublic(name=s.name, created_at=s.created_at, updated_at=s.updated_at)
            for s in secrets
        ]
    )


@router.delete("/{name}", status_code=204)
async def delete_secret(name: SecretName, user: CurrentUser, session: SessionDep) -> Response:
    """Delete a secret; tasks that use it fail with MissingSecret from then on."""
    if not await crud.delete_secret(session, user_id=user.id, name=name):
        raise NotFound("secret")
    await session.commit()
    return Response(status_code=204)
