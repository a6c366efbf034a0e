"""The webhook receiver under abuse: junk sent to a webhook's URL never locks its real
sender out, and a captured signed request cannot be replayed as a new delivery, by any API
process, for as long as it could be accepted."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.main import create_app
from api.signatures import TOLERANCE_SECONDS, sign
from schema import crud
from schema.orm import TaskWebhook, WebhookSignature
from schema.settings import Settings
from schema.tasks import TaskSpec
from tests.api.test_webhook_triggers import _hook, _path, trigger_task
from tests.conftest import ApiUser
from tests.fixtures.http_target import HttpTarget


@asynccontextmanager
async def api_process(settings: Settings, temporal: Client) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process on the same database and Temporal: its own memory, nothing else."""
    app: FastAPI = create_app(settings, temporal=temporal)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
            yield client


def _github(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery,
        "Content-Type": "application/json",
    }


async def _only_claim(
    sessions: async_sessionmaker[AsyncSession], public_id: str
) -> WebhookSignature:
    """The one signature claim the webhook has."""
    async with sessions() as session:
        webhook = await session.scalar(
            select(TaskWebhook).where(TaskWebhook.public_id == public_id)
        )
        assert webhook is not None
        [claim] = (
            await session.scalars(
                select(WebhookSignature).where(WebhookSignature.webhook_id == webhook.id)
            )
        ).all()
    return claim


async def test_junk_never_locks_out_a_validly_signed_sender(
    user: ApiUser, target: HttpTarget, settings: Settings, temporal: Client
) -> None:
    """Bad signatures beyond the refusal bucket are 429s; a good one is still a 202, every
    time, and runs."""
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}", concurrency=5))
    hook = await _hook(user, task["id"])
    limited = settings.model_copy(update={"webhook_rate_limit_per_minute": 5})
    async with api_process(limited, temporal) as http:
        junk = [
            await http.post(
                _path(hook),
                content=b'{"n": 0}',
                headers={"X-Cronpilot-Signature": f"t={int(time.time())},v1={'0' * 64}"},
            )
            for _ in range(12)
        ]
        statuses = [answer.status_code for answer in junk]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
        answers = []
        for n in range(3):
            body = f'{{"n": {n + 1}}}'.encode()
            headers = {
                "X-Cronpilot-Signature": sign(hook["secret"], body, int(time.time())),
                "X-Cronpilot-Delivery": f"real-{n}",
            }
            answers.append(await http.post(_path(hook), content=body, headers=headers))
            # The junk goes on between the real deliveries (a 401 when its bucket refilled).
            refused = await http.post(_path(hook), content=body, headers={})
            assert refused.status_code in (401, 429), refused.text
        assert [answer.status_code for answer in answers] == [202] * 3, [
            answer.text for answer in answers
        ]
    await target.wait_for_hits(key, 3)


async def test_a_github_replay_is_refused_by_another_process_and_later(
    user: ApiUser,
    target: HttpTarget,
    settings: Settings,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """GitHub signs no timestamp: the signature stays claimed by its delivery for
    WEBHOOK_REPLAY_DAYS, in the database, so a replay with a new X-GitHub-Delivery is a 401
    from any API process (here: another one, started after the first ended)."""
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"], "github")
    body = b'{"action": "opened"}'
    first = await user.client.post(
        _path(hook), content=body, headers=_github(hook["secret"], body, "gh-1")
    )
    assert first.status_code == 202, first.text
    async with api_process(settings, temporal) as other:
        replay = await other.post(
            _path(hook), content=body, headers=_github(hook["secret"], body, "gh-2")
        )
        assert replay.status_code == 401, replay.text
        assert "another delivery" in replay.json()["detail"]
        # The sender's own retry of the same delivery is still the same delivery.
        retry = await other.post(
            _path(hook), content=body, headers=_github(hook["secret"], body, "gh-1")
        )
        assert retry.status_code == 202 and retry.json() == first.json()
    await target.wait_for_hits(key, 1)

    claim = await _only_claim(sessions, hook["webhook_id"])
    assert claim.delivery_id == "gh-1"
    days = settings.webhook_replay_days
    assert claim.expires_at > datetime.now(UTC) + timedelta(days=days) - timedelta(minutes=5)

    # Once the claim has expired (made so here), the signature is free again.
    async with sessions.begin() as session:
        await session.execute(
            update(WebhookSignature)
            .where(WebhookSignature.digest == claim.digest)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    later = await user.client.post(
        _path(hook), content=body, headers=_github(hook["secret"], body, "gh-3")
    )
    assert later.status_code == 202, later.text
    await target.wait_for_hits(key, 2)


async def test_replays_count_as_refusals(
    user: ApiUser, target: HttpTarget, settings: Settings, temporal: Client
) -> None:
    """A captured request sent again and again: 401s within the refusal bucket, then 429s;
    the sender's own deliveries still go through."""
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}", concurrency=5))
    hook = await _hook(user, task["id"], "github")
    body = b'{"action": "closed"}'
    limited = settings.model_copy(update={"webhook_rate_limit_per_minute": 4})
    async with api_process(limited, temporal) as http:
        first = await http.post(
            _path(hook), content=body, headers=_github(hook["secret"], body, "a")
        )
        assert first.status_code == 202, first.text
        replays = [
            await http.post(
                _path(hook), content=body, headers=_github(hook["secret"], body, f"r{n}")
            )
            for n in range(8)
        ]
        statuses = [replay.status_code for replay in replays]
        assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}, statuses
        other = b'{"action": "reopened"}'
        fresh = await http.post(
            _path(hook), content=other, headers=_github(hook["secret"], other, "b")
        )
        assert fresh.status_code == 202, fresh.text
    await target.wait_for_hits(key, 2)


async def test_an_hmac_signature_is_claimed_while_its_timestamp_is_valid(
    user: ApiUser, target: HttpTarget, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = uuid.uuid4().hex
    task = await user.create_task(trigger_task(f"{target.url}/ok/{key}"))
    hook = await _hook(user, task["id"])
    body = b'{"n": 1}'
    at = int(time.time())
    headers: dict[str, Any] = {"X-Cronpilot-Signature": sign(hook["secret"], body, at)}
    first = await user.client.post(_path(hook), content=body, headers=headers)
    assert first.status_code == 202, first.text
    replay = await user.client.post(
        _path(hook), content=body, headers={**headers, "X-Cronpilot-Delivery": "new-id"}
    )
    assert replay.status_code == 401, replay.text
    claim = await _only_claim(sessions, hook["webhook_id"])
    # Past this, the timestamp check refuses the request anyway.
    assert claim.expires_at == datetime.fromtimestamp(at + TOLERANCE_SECONDS + 60, UTC)
    await target.wait_for_hits(key, 1)


async def test_expired_claims_are_deleted_in_batches(
    db: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC)
    async with db.begin() as session:
        owner = await crud.create_user(session, name=f"sig-{uuid.uuid4().hex[:8]}")
        spec = TaskSpec.model_validate(trigger_task("http://127.0.0.1:9/"))
        task = await crud.create_task(session, user_id=owner.id, spec=spec)
        webhook = await crud.create_webhook(session, task=task, auth="github", secret_encrypted="x")
        for n in range(5):
            claimed = await crud.claim_signature(
                session,
                webhook_id=webhook.id,
                signature=f"sig-{n}",
                delivery_id=f"d-{n}",
                expires_at=now + timedelta(seconds=-10 if n < 3 else 3600),
                now=now - timedelta(minutes=1),
            )
            assert claimed == f"d-{n}"
        # A live claim answers with its own delivery; an expired one is taken over.
        again = await crud.claim_signature(
            session,
            webhook_id=webhook.id,
            signature="sig-4",
            delivery_id="other",
            expires_at=now + timedelta(hours=1),
            now=now,
        )
        assert again == "d-4"
        taken = await crud.claim_signature(
            session,
            webhook_id=webhook.id,
            signature="sig-0",
            delivery_id="fresh",
            expires_at=now + timedelta(hours=1),
            now=now,
        )
        assert taken == "fresh"
    async with db.begin() as session:
        assert await crud.delete_expired_signatures(session, now=now, batch=1) == 1
        assert await crud.delete_expired_signatures(session, now=now, batch=1) == 1
        assert await crud.delete_expired_signatures(session, now=now, batch=1) == 0
        left = (
            await session.scalars(
                select(WebhookSignature.delivery_id).where(
                    WebhookSignature.webhook_id == webhook.id
                )
            )
        ).all()
    assert sorted(left) == ["d-3", "d-4", "fresh"]
