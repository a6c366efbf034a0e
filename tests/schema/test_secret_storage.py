"""Secrets at rest: encrypted with a key derived from SECRET_KEY, and rotatable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cli import rotate_secrets
from schema import crud
from schema.crypto import SecretBox
from schema.db import create_engine, create_sessionmaker
from schema.migrate import upgrade_async
from schema.settings import Settings

OLD, NEW = "old-key-" + "o" * 32, "new-key-" + "n" * 32


@pytest.fixture
async def own_database(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    """A database of this test's own: rotation touches every stored secret."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'rotate.db'}"
    await upgrade_async(url)
    engine = create_engine(url)
    yield url, create_sessionmaker(engine)
    await engine.dispose()


async def test_values_are_encrypted_and_rotate_to_a_new_key(
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    url, action_sessions = own_database
    old = Settings(env="dev", database_url=url, secret_key=OLD)
    async with action_sessions.begin() as session:
        user = await crud.create_user(session, name=f"rot-{uuid.uuid4().hex[:8]}")
        await crud.put_secret(
            session,
            user_id=user.id,
            name="TOKEN",
            value_encrypted=SecretBox(old).encrypt("plain-value-123"),
        )
    async with action_sessions() as session:
        raw = await session.scalar(text("SELECT value_encrypted FROM secrets WHERE name = 'TOKEN'"))
    assert raw and "plain-value-123" not in raw

    both = Settings(env="dev", database_url=url, secret_key=NEW, secret_key_previous=OLD)
    assert SecretBox(both).decrypt(raw) == "plain-value-123"
    new_only = Settings(env="dev", database_url=url, secret_key=NEW)
    with pytest.raises(InvalidToken):
        SecretBox(new_only).decrypt(raw)

    assert await rotate_secrets(both) >= 1
    async with action_sessions() as session:
        stored = (await crud.list_secrets(session, user_id=user.id))[0]
    assert SecretBox(new_only).decrypt(stored.value_encrypted) == "plain-value-123"
    with pytest.raises(InvalidToken):
        SecretBox(old).decrypt(stored.value_encrypted)
