"""Request dependencies as ``Annotated`` aliases: settings, session, Temporal, current user."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import Problem
from api.receiving import RateLimiter, UsageCounter
from api.scheduling import ScheduledTask
from schema import crud
from schema.crypto import SecretBox
from schema.orm import Task, User
from schema.settings import Settings

CACHE_LIMIT = 10_000


class _SharedLock:
    """Shared holders (run now under ``allow_all``) go together; an exclusive holder (any
    change) goes alone, and once it waits, new shared holders wait behind it."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def hold(self, *, shared: bool) -> AsyncIterator[None]:
        async with self._changed:
            if shared:
                await self._changed.wait_for(lambda: not (self._exclusive or self._waiting))
                self._shared += 1
            else:
                self._waiting += 1
                try:
                    await self._changed.wait_for(lambda: not (self._exclusive or self._shared))
                finally:
                    self._waiting -= 1  # also when the request is cancelled while it waits
                    self._changed.notify_all()
                self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                if shared:
                    self._shared -= 1
                else:
                    self._exclusive = False
                self._changed.notify_all()


class TaskLocks:
    """One lock per task in this process. Requests for one task queue here, in order,
    before taking its database lock: SQLite's lock waits by polling, which a crowd of
    requests for one task would turn into a slow lottery."""

    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, tuple[_SharedLock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, task_id: uuid.UUID, *, shared: bool = False) -> AsyncIterator[None]:
        lock, users = self._locks.get(task_id, (_SharedLock(), 0))
        self._locks[task_id] = (lock, users + 1)
        try:
            async with lock.hold(shared=shared):
                yield
        finally:
            lock, users = self._locks[task_id]
            if users == 1:
                del self._locks[task_id]
            else:
                self._locks[task_id] = (lock, users - 1)


@dataclass
class AppState:
    """What the lifespan creates once per process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: Client
    # Set once the start-up reconcile has run: not ready before.
    reconciled: asyncio.Event = field(default_factory=asyncio.Event)
    task_locks: TaskLocks = field(default_factory=TaskLocks)
    webhook_uses: UsageCounter = field(default_factory=UsageCounter)
    webhook_limits: RateLimiter = field(init=False)

    # Webhook secrets decrypted, and the specs of their tasks read, by what they were made
    # from: the receiver does neither again for every delivery.
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    trigger_specs: dict[tuple[uuid.UUID, datetime], ScheduledTask] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.webhook_limits = RateLimiter(self.settings.webhook_rate_limit_per_minute)

    def webhook_secret(self, encrypted: str) -> str:
        secret = self.webhook_secrets.get(encrypted)
        if secret is None:
            if len(self.webhook_secrets) > CACHE_LIMIT:
                self.webhook_secrets.clear()
            secret = self.webhook_secrets[encrypted] = SecretBox(self.settings).decrypt(encrypted)
        return secret

    def scheduled(self, task: Task) -> ScheduledTask:
        """The task as its schedule or trigger workflow sees it (cached by its last change)."""
        key = (task.id, task.updated_at)
        found = self.trigger_specs.get(key)
        if found is None or found.paused != (task.status == "paused"):
            if len(self.trigger_specs) > CACHE_LIMIT:
                self.trigger_specs.clear()
            found = self.trigger_specs[key] = ScheduledTask.of(task)
        return found


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
