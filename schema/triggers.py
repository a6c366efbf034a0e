"""What starts a ``trigger`` task (a webhook, an event, an email) and what each start carries.

A trigger task has one long-lived ``TriggerWorkflow`` (``trigger-{task_id}``); every
delivery (a webhook call, a matching event, a new email) is signalled to it and runs as a
child ``TaskWorkflow`` with the delivery's ``payload``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from schema.actions import SingleLine, StrictModel
from schema.json_values import json_value_problem

DeliveryKind = Literal["webhook", "event", "email"]
WebhookAuth = Literal["hmac", "github", "token"]
ImapSecurity = Literal["ssl", "starttls", "none"]
# Event names: `order.created`, `task.failed`, `billing:invoice-paid`.
EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")
# Built-in events every run of a task emits when it ends.
BUILTIN_EVENTS = ("task.succeeded", "task.failed")
# A chain of event-triggered runs (a run's event starting a run whose event starts...) is
# cut at this depth: the event that would start a deeper run starts nothing.
MAX_EVENT_DEPTH = 8
MAX_DELIVERY_ID_CHARS = 200


# In the JSON schema too, so that clients (and the OpenAPI document) know the rule.
EventName = Annotated[
    str,
    Field(
        pattern=f"^{EVENT_NAME.pattern}$",
        description="1-200 letters, digits and `_ . : -`, starting with a letter or digit "
        "(say order.created).",
    ),
]


class WebhookTrigger(StrictModel):
    """Started by a call to one of the task's webhooks (``POST /api/tasks/{id}/webhook``)."""

    kind: Literal["webhook"]


class EventTrigger(StrictModel):
    """Started by ``POST /api/events`` with this name, or by a built-in event
    (``task.succeeded``, ``task.failed``) of the same user's runs."""

    kind: Literal["event"]
    event: EventName = Field(description="The event name to start on, say order.created.")


class EmailTrigger(StrictModel):
    """Started by each new message in an IMAP mailbox, polled every ``poll_seconds``."""

    kind: Literal["email"]
    imap_host: SingleLine = Field(min_length=1, max_length=253)
    imap_port: int | None = Field(
        None, ge=1, le=65535, description="Default 993 with ssl, 143 with starttls or none."
    )
    imap_security: ImapSecurity = Field(
        "ssl", description="ssl (TLS from the start), starttls, or none (plain text)."
    )
    username: SingleLine = Field(min_length=1, max_length=320)
    password_secret: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The name of the secret holding the mailbox password.",
    )
    folder: SingleLine = Field("INBOX", min_length=1, max_length=200)
    from_contains: SingleLine | None = Field(
        None, max_length=320, description="Only messages whose From contains this (any case)."
    )
    subject_contains: SingleLine | None = Field(
        None, max_length=998, description="Only messages whose Subject contains this."
    )
    poll_seconds: int = Field(60, ge=10, le=86400)

    @property
    def port(self) -> int:
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_security == "ssl" else 143


TriggerSpec = Annotated[WebhookTrigger | EventTrigger | EmailTrigger, Field(discriminator="kind")]


class Delivery(BaseModel):
    """One start of a trigger task, as signalled to its ``TriggerWorkflow``.
    Fields can only be added, with defaults: workflows in flight carry older ones."""

    delivery_id: str
    kind: DeliveryKind
    payload: Any = None
    received_at: datetime
    # How many event hops led here (see MAX_EVENT_DEPTH); 0 for webhooks and emails.
    depth: int = 0


def payload_problem(payload: Any, max_depth: int = 32) -> tuple[list[str | int], str] | None:
    """Where a delivery's payload nests deeper than ``max_depth`` or holds what no JSON
    store keeps (a NUL character, a lone surrogate, a number that is not finite), or None."""
    problem = json_value_problem(payload, max_depth)
    return (list(problem[0]), problem[1]) if problem else None


def delivery_digest(delivery_id: str) -> str:
    """A short, fixed-size stand-in for a delivery id: what the dedup window keeps, and the
    tail of the run's workflow id."""
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
