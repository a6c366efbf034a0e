"""Webhooks of trigger tasks: create (the secret shown once), list, revoke, and the public
receiver that turns a signed request into a delivery."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api import triggers
from api.bodies import CheckedJsonRoute
from api.deps import CurrentUser, SessionDep, StateDep
from api.errors import Conflict, Invalid, NotFound, Problem
from api.receiving import admit, too_many
from api.routes.tasks import _locked
from schema import crud
from schema.crypto import SecretBox
from schema.orm import Task, TaskWebhook
from schema.settings import Settings
from schema.triggers import Delivery, WebhookAuth, payload_problem

log = logging.getLogger("cronpilot.webhooks")
router = APIRouter(tags=["webhooks"], route_class=CheckedJsonRoute)
MAX_WEBHOOKS_PER_TASK = 20
WebhookId = Annotated[str, Path(pattern=r"^wh_[A-Za-z0-9_-]{1,60}$")]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auth: WebhookAuth = Field(
        "hmac",
        description="hmac: X-Cronpilot-Signature t=<unix>,v1=<hex HMAC-SHA256(secret, "
        '"<t>.<body>")>, within 300 s. github: X-Hub-Signature-256 sha256=<hex '
        "HMAC-SHA256(secret, body)>. token: X-Cronpilot-Token <secret>.",
    )


class WebhookPublic(BaseModel):
    webhook_id: str
    url: str
    auth: WebhookAuth
    created_at: datetime
    last_used_at: datetime | None = Field(description="May lag a few seconds behind.")
    use_count: int = Field(description="Deliveries accepted; may lag a few seconds behind.")
    revoked_at: datetime | None


class WebhookCreated(BaseModel):
    webhook_id: str
    url: str
    secret: str = Field(description="Shown only now; it is kept encrypted.")
    auth: WebhookAuth
    created_at: datetime


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class DeliveryAccepted(BaseModel):
    delivery_id: str = Field(
        description="The delivery's id: X-Cronpilot-Delivery (or "
        "X-GitHub-Delivery) when given, else a hash of the body and its timestamp."
    )
    workflow_id: str = Field(
        description="The workflow id of the run this delivery becomes (a repeat: the run "
        "it already became); filter the task's executions by it."
    )


def webhook_url(settings: Settings, public_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/api/webhooks/{public_id}"


def _public(webhook: TaskWebhook, settings: Settings) -> WebhookPublic:
    return WebhookPublic(
        webhook_id=webhook.public_id,
        url=webhook_url(settings, webhook.public_id),
        auth=webhook.auth,
        created_at=webhook.created_at,
        last_used_at=webhook.last_used_at,
        use_count=webhook.use_count,
        revoked_at=webhook.revoked_at,
    )


@router.post("/api/tasks/{task_id:uuid}/webhook", status_code=201)
async def create_webhook(
    task_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    body: WebhookCreate | None = None,
) -> WebhookCreated:
    """Create a webhook for a webhook-trigger task. Its secret is in this answer only."""
    auth = (body or WebhookCreate()).auth
    async with _locked(state, session, user, task_id) as task:
        spec = crud.task_spec(task)
        if spec.trigger is None or spec.trigger.kind != "webhook":
            raise Conflict("only a trigger task of kind webhook takes webhooks")
        live = [w for w in await crud.list_webhooks(session, task_id=task.id) if not w.revoked_at]
        if len(live) >= MAX_WEBHOOKS_PER_TASK:
            raise Conflict(f"a task has at most {MAX_WEBHOOKS_PER_TASK} live webhooks")
        secret = secrets.token_urlsafe(32)
        encrypted = SecretBox(state.settings).encrypt(secret)
        webhook = await crud.create_webhook(
            session, task=task, auth=auth, secret_encrypted=encrypted
        )
    return WebhookCreated(
        webhook_id=webhook.public_id,
        url=webhook_url(state.settings, webhook.public_id),
        secret=secret,
        auth=auth,
        created_at=webhook.created_at,
    )


@router.get("/api/tasks/{task_id:uuid}/webhooks")
async def list_webhooks(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> WebhookList:
    """The task's webhooks, revoked ones too, without their secrets."""
    task = await crud.get_task(session, user_id=user.id, task_id=task_id)
    if task is None:
        raise NotFound("task")
    webhooks = await crud.list_webhooks(session, task_id=task.id)
    return WebhookList(items=[_public(webhook, state.settings) for webhook in webhooks])


@router.delete("/api/webhooks/{webhook_id}", status_code=204)
async def revoke_webhook(webhook_id: WebhookId, user: CurrentUser, session: SessionDep) -> Response:
    """Revoke a webhook: its URL answers 404 from now on. A second revoke is a 404."""
    webhook = await crud.get_webhook(session, public_id=webhook_id, user_id=user.id)
    if webhook is None or webhook.revoked_at is not None:
        raise NotFound("webhook")
    webhook.revoked_at = datetime.now(UTC)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/api/webhooks/{webhook_id}",
    status_code=202,
    openapi_extra={"security": []},
    responses={
        401: {"description": "Missing or bad signature or token; nothing starts."},
        404: {"description": "No such webhook, or it was revoked."},
        409: {"description": "The task is paused; nothing starts."},
        413: {"description": "The body is over WEBHOOK_MAX_BODY_BYTES."},
        429: {"description": "Over the webhook's rate limit; see Retry-After."},
        503: {"description": "Temporal is unreachable; nothing was accepted, retry."},
    },
)
async def receive(webhook_id: WebhookId, request: Request, state: StateDep) -> DeliveryAccepted:
    """The public receiver: no API key, the webhook's own signature instead. The body (JSON,
    else `{"raw": text}`) becomes the run's `payload`. 202 only once Temporal accepted the
    delivery; a repeated delivery id is 202 again with the same id and runs once."""
    settings = state.settings
    body = await request.body()
    if len(body) > settings.webhook_max_body_bytes:
        raise Problem(413, f"the body exceeds {settings.webhook_max_body_bytes} bytes")
    headers = {name.lower(): value for name, value in request.headers.items()}
    async with state.sessions() as session:
        found = await crud.webhook_target(session, public_id=webhook_id)
        if found is None:
            raise NotFound("webhook")
        webhook, task = found
        if not _takes_webhooks(task):
            raise NotFound("webhook")  # its task is no longer a webhook trigger
        delivery_id = await admit(
            session,
            webhook=webhook,
            secret=state.webhook_secret(webhook.secret_encrypted),
            headers=headers,
            body=body,
            settings=settings,
            limits=state.webhook_limits,
        )
    limits = state.webhook_limits
    if (wait := limits.take(webhook_id, time.monotonic())) is not None:
        raise too_many(settings, limits, wait)
    if task.status != "active":
        raise Conflict(f"task is {task.status}: it takes no deliveries")
    received_at = datetime.now(UTC)
    delivery = Delivery(
        delivery_id=delivery_id,
        kind="webhook",
        payload=_payload(body),
        received_at=received_at,
    )
    try:
        workflow_id = await triggers.deliver(
            state.temporal, state.scheduled(task), settings.task_queue, delivery
        )
    except triggers.TriggerGone:
        raise NotFound("webhook") from None  # its task was deleted meanwhile
    state.webhook_uses.count(webhook_id, received_at)
    return DeliveryAccepted(delivery_id=delivery.delivery_id, workflow_id=workflow_id)


def _takes_webhooks(task: Task) -> bool:
    return (
        task.type == "trigger"
        and isinstance(task.trigger, dict)
        and (task.trigger.get("kind") == "webhook")
    )


def _payload(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    try:
        payload: Any = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        payload = {"raw": text}
    problem = payload_problem(payload)
    if problem:
        raise Invalid([{"loc": ["body", *problem[0]], "msg": problem[1]}])
    return payload
