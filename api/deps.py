"""Request dependencies as ``Annotated`` aliases: settings, session, Temporal, current user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import Problem
from schema import crud
from schema.orm import User
from schema.settings import Settings


@dataclass
class AppState:
    """What the lifespan creates once per process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: Client
    # Set once the start-up reconcile has run: not ready before.
    reconciled: asyncio.Event = field(default_factory=asyncio.Event)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.cronpilot
    return state


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _state(request).sessions() as session:
        yield session


def _settings(request: Request) -> Settings:
    return _state(request).settings


def _temporal(request: Request) -> Client:
    return _state(request).temporal


StateDep = Annotated[AppState, Depends(_state)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
TemporalDep = Annotated[Client, Depends(_temporal)]
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cp_...`")


async def _current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    user = await crud.user_for_api_key(session, key=credentials.credentials)
    if user is None:
        raise _unauthorized("invalid or revoked API key")
    await session.commit()
    return user


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


CurrentUser = Annotated[User, Depends(_current_user)]
