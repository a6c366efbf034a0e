"""Query functions on PostgreSQL and SQLite: pagination, filters, keys."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema import crud
from schema.tasks import TaskSpec


def _spec(name: str, tags: list[str], description: str = "") -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": name,
            "description": description,
            "type": "recurring",
            "tags": tags,
            "schedule": {"cron": "0 9 * * *"},
            "action": {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        }
    )


async def test_tasks_list_filter_and_page(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        user = await crud.create_user(session, name=f"c-{uuid.uuid4().hex[:8]}")
        other = await crud.create_user(session, name=f"c-{uuid.uuid4().hex[:8]}")
        for n in range(7):
            await crud.create_task(
                session,
                user_id=user.id,
                spec=_spec(
                    f"task {n}", ["x"] if n % 3 == 0 else ["y"], "100%_off" if n == 5 else ""
                ),
            )
        await crud.create_task(session, user_id=other.id, spec=_spec("theirs", ["x"]))

    async with db() as session:
        names, cursor = [], None
        while True:
            page, cursor = await crud.list_tasks(session, user_id=user.id, limit=3, cursor=cursor)
            names += [t.name for t in page]
            if cursor is None:
                break
        assert names == [f"task {n}" for n in reversed(range(7))]
        tagged, _ = await crud.list_tasks(session, user_id=user.id, tag="x")
        assert [t.name for t in tagged] == ["task 6", "task 3", "task 0"]
        # LIKE wildcards in the search text are literal.
        found, _ = await crud.list_tasks(session, user_id=user.id, q="0%_O")
        assert [t.name for t in found] == ["task 5"]
        for wildcard in ("%", "_"):
            literal, _ = await crud.list_tasks(session, user_id=user.id, q=wildcard)
            assert [t.name for t in literal] == ["task 5"]
        with pytest.raises(crud.InvalidCursor):
            await crud.list_tasks(session, user_id=user.id, cursor="bm90IGpzb24")


async def test_api_keys_are_hashed_and_revocable(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        user = await crud.create_user(session, name=f"k-{uuid.uuid4().hex[:8]}")
        key, plain = await crud.create_api_key(session, user_id=user.id)
        assert plain.startswith("cp_") and key.key_hash == crud.hash_api_key(plain)
        assert plain not in (key.key_hash, key.prefix) and plain.startswith(key.prefix)
    async with db.begin() as session:
        found = await crud.user_for_api_key(session, key=plain)
        assert found is not None and found.id == user.id
        assert await crud.revoke_api_key(session, key_id=key.id)
    async with db() as session:
        assert await crud.user_for_api_key(session, key=plain) is None
