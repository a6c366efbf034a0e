"""Queries that stay fast as history grows: each hot query is answered by an index in the
order it needs (no sort of a task's whole history), on both databases. The statements are
the ones crud really runs, captured on the way to the database and explained there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema import crud
from schema.orm import Task, User, utcnow
from schema.tasks import TaskCreate
from tests.fixtures.tasks import recurring


async def _plan(
    db: async_sessionmaker[AsyncSession], run: Callable[[AsyncSession], Awaitable[Any]]
) -> str:
    """The plan of the last statement ``run`` sends, as the database explains it."""
    sent: list[tuple[str, Any]] = []

    def _capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    async with db() as session:
        sync_engine = session.get_bind()
        event.listen(sync_engine, "before_cursor_execute", _capture)
        try:
            await run(session)
        finally:
            event.remove(sync_engine, "before_cursor_execute", _capture)
        statement, parameters = sent[-1]
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            # Whatever the table's size: can an index answer it in order, with no sort?
            for plan_type in ("seqscan", "bitmapscan", "sort"):
                await connection.exec_driver_sql(f"SET LOCAL enable_{plan_type} = off")
            rows = await connection.exec_driver_sql("EXPLAIN " + statement, parameters)
        else:
            rows = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row[-1]) for row in rows)


@pytest.fixture
async def history(
    db: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    """A user and a task (never scheduled: it only gives the queries something to name),
    removed afterwards so that no reconcile elsewhere gives it a schedule."""
    body = recurring("http://127.0.0.1:9/", interval_seconds=86400)
    async with db.begin() as session:
        user = await crud.create_user(session, name=f"plans-{uuid.uuid4().hex[:8]}")
        task = await crud.create_task(
            session, user_id=user.id, spec=TaskCreate.model_validate(body)
        )
        ids = user.id, task.id
    yield ids
    async with db.begin() as session:
        await session.execute(delete(Task).where(Task.id == ids[1]))
        await session.execute(delete(User).where(User.id == ids[0]))


def _sorted(plan: str) -> bool:
    return "Sort" in plan or "TEMP B-TREE" in plan


async def test_execution_pages_read_the_keyset_index_in_order(
    db: async_sessionmaker[AsyncSession], history: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, task_id = history
    cursor = crud.encode_cursor(utcnow(), uuid.uuid4())
    for status in (None, "failed"):

        async def page(session: AsyncSession, status: str | None = status) -> object:
            return await crud.list_executions(
                session, user_id=user_id, task_id=task_id, status=status, limit=50, cursor=cursor
            )

        plan = await _plan(db, page)
        # An index seeks straight to the cursor (a row-value bound) and yields rows in order.
        assert "ix_task_executions_" in plan, plan
        assert "ROW(started_at, id) <" in plan or "(started_at,id)<" in plan, plan
        assert not _sorted(plan), plan


async def test_running_executions_use_the_partial_index(
    db: async_sessionmaker[AsyncSession],
) -> None:
    cutoff = utcnow() - timedelta(hours=1)
    plan = await _plan(db, lambda s: crud.running_executions_before(s, cutoff=cutoff, limit=100))
    assert "ix_task_executions_running" in plan, plan
    assert not _sorted(plan), plan


async def test_duration_statistics_read_only_the_newest_runs(
    db: async_sessionmaker[AsyncSession], history: tuple[uuid.UUID, uuid.UUID]
) -> None:
    _, task_id = history
    plan = await _plan(db, lambda s: crud.duration_stats(s, task_id=task_id))
    assert "ix_task_executions_task_started" in plan, plan
    assert not _sorted(plan), plan


async def test_a_users_runs_in_flight_read_only_runs_in_flight(
    db: async_sessionmaker[AsyncSession], history: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The web UI's task list asks every second (GET /api/executions?status=running): the
    answer must not scan the user's whole history for the few running rows."""
    user_id, _ = history
    plan = await _plan(
        db, lambda s: crud.list_executions(s, user_id=user_id, status="running", limit=200)
    )
    assert "ix_task_executions_user_running" in plan, plan
    assert not _sorted(plan), plan
