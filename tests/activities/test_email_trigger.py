"""The poll activity on its own (no Temporal server): the outbound network guard and the
password secret, checked before anything is delivered. End to end: tests/api."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities._mailbox import Message
from activities.email_trigger import EmailTriggerActivities, delivery_id
from schema import crud
from schema.crypto import SecretBox
from schema.settings import Settings
from schema.tasks import TaskSpec
from tests.fixtures.imap_server import ImapServer

SECRET = "MAILBOX_PW"


async def _poll(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    imap_server: ImapServer,
    *,
    secret: str | None,
    deleted: bool = False,
) -> dict[str, Any]:
    """One poll of a fresh, empty mailbox, as a user whose secret holds ``secret`` (for a
    task ``deleted`` already, when asked)."""
    mailbox = f"box-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    imap_server.add_user(mailbox, password)
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"poll-{uuid.uuid4().hex[:8]}")
        if secret is not None:
            value = password if secret == "right" else secret
            await crud.put_secret(
                session,
                user_id=user.id,
                name=SECRET,
                value_encrypted=SecretBox(settings).encrypt(value),
            )
    trigger = {
        "kind": "email",
        "imap_host": imap_server.host,
        "imap_port": imap_server.ports["none"],
        "imap_security": "none",
        "username": mailbox,
        "password_secret": SECRET,
    }
    spec = {
        "name": "poll",
        "type": "trigger",
        "trigger": trigger,
        "action": {"type": "webhook", "config": {"url": "https://example.com/"}},
    }
    async with sessions.begin() as session:
        task = await crud.create_task(session, user_id=user.id, spec=TaskSpec.model_validate(spec))
        if deleted:
            await session.delete(task)
    poll = {"task_id": str(task.id), "user_id": str(user.id), "task": spec}
    # No message to deliver: the client is never used.
    activities = EmailTriggerActivities(sessions, cast(Client, None), settings)
    result: dict[str, Any] = await ActivityEnvironment().run(activities.poll_mailbox, poll)
    return result


def _settings(pg_url: str, **overrides: Any) -> Settings:
    return Settings(
        env="dev", database_url=pg_url, secret_key="test-secret-key-" + "x" * 32, **overrides
    )


async def test_private_addresses_are_refused_unless_allowed(
    pg_url: str, action_sessions: async_sessionmaker[AsyncSession], imap_server: ImapServer
) -> None:
    closed = _settings(pg_url, allow_private_networks=False)
    with pytest.raises(ApplicationError) as error:
        await _poll(action_sessions, closed, imap_server, secret="right")
    assert error.value.type == "BlockedAddress" and error.value.non_retryable
    assert "127.0.0.1" in error.value.message

    opened = _settings(pg_url, allow_private_networks=False, allowed_networks="127.0.0.0/8")
    result = await _poll(action_sessions, opened, imap_server, secret="right")
    assert result == {"delivered": 0, "message_ids": [], "task_gone": False}


@pytest.mark.parametrize(
    ("secret", "error_type"), [(None, "MissingSecret"), ("wrong-pw", "ImapAuthError")]
)
async def test_secret_problems_are_not_retryable(
    pg_url: str,
    action_sessions: async_sessionmaker[AsyncSession],
    imap_server: ImapServer,
    secret: str | None,
    error_type: str,
) -> None:
    with pytest.raises(ApplicationError) as error:
        await _poll(action_sessions, _settings(pg_url), imap_server, secret=secret)
    assert error.value.type == error_type and error.value.non_retryable
    assert "wrong-pw" not in error.value.message


async def test_a_poll_of_a_deleted_task_reads_no_password(
    pg_url: str, action_sessions: async_sessionmaker[AsyncSession], imap_server: ImapServer
) -> None:
    with pytest.raises(ApplicationError) as error:
        await _poll(action_sessions, _settings(pg_url), imap_server, secret="right", deleted=True)
    assert error.value.type == "TaskDeleted" and error.value.non_retryable


def test_the_delivery_id_is_the_message_id_or_its_digest() -> None:
    short = Message(uid="1", payload={"message_id": "a@example.com"})
    assert delivery_id(short) == "email:a@example.com"
    long = Message(uid="2", payload={"message_id": "x" * 300 + "@example.com"})
    assert delivery_id(long).startswith("email:sha256:") and len(delivery_id(long)) == 77
