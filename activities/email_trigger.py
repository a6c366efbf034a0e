"""The mailbox poll of email-trigger tasks: ``poll_mailbox`` hands each new matching message
to the task's ``TriggerWorkflow`` as one delivery, then marks it seen.

A message is marked \\Seen only once Temporal accepted its delivery. A poll that dies in
between leaves it unseen, the next poll delivers it again, and the ``TriggerWorkflow``
drops the repeat by its delivery id (``email:`` and the Message-ID): a message runs the
task once. The poll reads unseen messages only, so one marked read by someone else first
is never delivered, and the filters' non-matching messages are left as they are.

A poll fails with the mailbox reader's types (``ImapAuthError``... see
``activities/_mailbox.py``), ``MissingSecret`` or ``BlockedAddress``; those that cannot
succeed on a retry fail it at once. A failed poll records no execution: it is one line in
the worker's log and a failed ``EmailPollWorkflow`` among the task's runs in the Temporal
Web UI, and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities._action import ActionError
from activities._failure import ActionFailure
from activities._mailbox import Mailbox, Message, fetch_unseen, mark_seen
from activities._network import BlockedAddress, checked_addresses
from activities._redaction import redact
from api import triggers
from api.scheduling import ScheduledTask
from schema import crud
from schema.actions import STORED
from schema.crypto import SecretBox
from schema.settings import Settings
from schema.tasks import TriggerInput
from schema.triggers import MAX_DELIVERY_ID_CHARS, Delivery, EmailTrigger

# More waits for the next poll: one poll's deliveries stay a bounded burst of signals.
MAX_MESSAGES_PER_POLL = 50
RESOLVE_TIMEOUT_SECONDS = 10.0
DELIVERY_PREFIX = "email:"


def delivery_id(message: Message) -> str:
    """The delivery id of a message: ``email:`` and its Message-ID (a digest of a long one)."""
    message_id = message.payload.get("message_id") or ""
    if len(DELIVERY_PREFIX) + len(message_id) <= MAX_DELIVERY_ID_CHARS:
        return DELIVERY_PREFIX + message_id
    return f"{DELIVERY_PREFIX}sha256:{hashlib.sha256(message_id.encode()).hexdigest()}"


def _without_nul(payload: dict[str, str | None]) -> dict[str, str | None]:
    # PostgreSQL's JSON refuses NUL, and an action's result may quote the payload.
    return {
        key: value.replace("\x00", "\ufffd") if value else value for key, value in payload.items()
    }


class EmailTriggerActivities:
    """The poll activity: it needs the database (the password secret), the settings (the
    network guard, the CA file) and the Temporal client (deliveries)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], client: Client, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.settings = settings

    @activity.defn
    async def poll_mailbox(self, poll: Any) -> dict[str, Any]:
        """Deliver the mailbox's new matching messages to the task's trigger workflow, each
        marked seen once Temporal accepted it; how many, and their Message-IDs."""
        # Read as stored: a task saved before a check was added still polls.
        start = TriggerInput.model_validate(poll, context=STORED)
        trigger = start.task.trigger
        if not isinstance(trigger, EmailTrigger):
            raise ActionError(
                "not an email-trigger task", type="NotEmailTrigger", non_retryable=True
            )
        hidden: list[str] = []
        try:
            password = await self._password(start, trigger.password_secret)
            hidden = [password]
            box = await self._mailbox(trigger, password)
            messages = await fetch_unseen(
                box,
                from_contains=trigger.from_contains,
                subject_contains=trigger.subject_contains,
                limit=MAX_MESSAGES_PER_POLL,
            )
            return await self._deliver(start, box, messages)
        except ActionFailure as failure:
            message = redact(failure.message, hidden)
            raise ActionError(
                message, type=failure.type, non_retryable=not failure.retryable
            ) from None

    async def _password(self, start: TriggerInput, name: str) -> str:
        async with self.sessions() as session:
            task_id, user_id = start.task_id, start.user_id
            if not await crud.task_exists(session, task_id=task_id, user_id=user_id):
                message = "the task was deleted: a poll still going gets no secrets"
                raise ActionFailure("TaskDeleted", message, retryable=False)
            stored = await crud.list_secrets(session, user_id=user_id)
        for secret in stored:
            if secret.name == name:
                return SecretBox(self.settings).decrypt(secret.value_encrypted)
        message = (
            f"no secret named {name!r} (the mailbox password); "
            f"create it with PUT /api/secrets/{name}"
        )
        raise ActionFailure("MissingSecret", message, retryable=False)

    async def _mailbox(self, trigger: EmailTrigger, password: str) -> Mailbox:
        """The mailbox, reached only at addresses the outbound network guard allows."""
        try:
            addresses = await asyncio.wait_for(
                checked_addresses(
                    trigger.imap_host,
                    trigger.port,
                    allow_private=bool(self.settings.allow_private_networks),
                    allowed=self.settings.allowed_network_list,
                ),
                RESOLVE_TIMEOUT_SECONDS,
            )
        except BlockedAddress as error:
            raise ActionFailure("BlockedAddress", str(error), retryable=False) from None
        except (OSError, TimeoutError) as error:  # socket.gaierror included
            message = f"cannot resolve {trigger.imap_host}: {error or 'timed out'}"
            raise ActionFailure("ImapConnectionError", message, retryable=True) from None
        ca_file = self.settings.imap_ca_file
        return Mailbox(
            host=trigger.imap_host,
            port=trigger.port,
            username=trigger.username,
            password=password,
            security=trigger.imap_security,
            folder=trigger.folder,
            ca_file=str(ca_file) if ca_file else None,
            addresses=tuple(str(address) for address in addresses),
        )

    async def _deliver(
        self, start: TriggerInput, box: Mailbox, messages: list[Message]
    ) -> dict[str, Any]:
        # Deliveries start the trigger workflow with the task as the schedule carries it
        # (created_at only places a schedule's intervals: unused here).
        task = ScheduledTask(
            start.task_id, start.user_id, start.task, datetime.now(UTC), start.paused
        )
        task_queue = activity.info().task_queue
        delivered: list[Message] = []
        gone = False
        try:
            for message in messages:
                delivery = Delivery(
                    delivery_id=delivery_id(message),
                    kind="email",
                    payload=_without_nul(message.payload),
                    received_at=datetime.now(UTC),
                )
                try:
                    await triggers.deliver(self.client, task, task_queue, delivery)
                except triggers.TriggerGone:
                    gone = True  # the task is being deleted: its schedule goes with it
                    break
                delivered.append(message)
        finally:
            # Only what Temporal accepted; the rest stays unseen for the next poll.
            await mark_seen(box, [message.uid for message in delivered])
        if delivered:
            activity.logger.info(
                "delivered %d message(s) from %s to task %s",
                len(delivered),
                box.host,
                start.task_id,
            )
        return {
            "delivered": len(delivered),
            "message_ids": [message.payload.get("message_id") for message in delivered],
            "task_gone": gone,
        }
