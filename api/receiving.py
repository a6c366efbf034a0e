"""The webhook receiver's checks and what it keeps: who may deliver (``admit``: the
credential, then the signature's claim, so that a replay is refused by every API process),
a token bucket per webhook, and use counts written to the database in batches (the receiver
never waits on those writes; the claim is the one write a signed delivery waits for)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.errors import Invalid, Problem
from api.signatures import TOLERANCE_SECONDS, verify
from schema import crud
from schema.orm import TaskWebhook
from schema.settings import Settings
from schema.triggers import MAX_DELIVERY_ID_CHARS

log = logging.getLogger("cronpilot.webhooks")
FLUSH_EVERY_SECONDS = 2.0
MAX_BUCKETS = 100_000
DELIVERY_HEADERS = ("x-cronpilot-delivery", "x-github-delivery")


class RateLimiter:
    """A token bucket per key: ``per_minute`` tokens deep, refilled at ``per_minute`` a
    minute. ``take`` answers None when allowed, else the seconds until a token is back."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float | None:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()  # a flood of keys: start every bucket full again
        self._buckets[key] = (tokens - 1, now)
        return None

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


class UsageCounter:
    """Webhook uses since the last flush; ``flush`` writes them, keeping them on failure."""

    def __init__(self) -> None:
        self._uses: dict[str, tuple[int, datetime]] = {}

    def count(self, public_id: str, at: datetime) -> None:
        count, last = self._uses.get(public_id, (0, at))
        self._uses[public_id] = (count + 1, max(last, at))

    async def flush(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        uses, self._uses = self._uses, {}
        if not uses:
            return
        try:
            async with sessions.begin() as session:
                await crud.count_webhook_uses(session, uses)
        except Exception as error:
            log.warning("webhook use counts not written yet (%r); kept for the next try", error)
            for public_id, (count, at) in uses.items():
                earlier, last = self._uses.get(public_id, (0, at))
                self._uses[public_id] = (earlier + count, max(last, at))

    async def flush_forever(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY_SECONDS)
                await self.flush(sessions)
        finally:
            await asyncio.shield(self.flush(sessions))


async def admit(
    session: AsyncSession,
    *,
    webhook: TaskWebhook,
    secret: str,
    headers: dict[str, str],
    body: bytes,
    settings: Settings,
    limits: RateLimiter,
) -> str:
    """The delivery id of a request whose credential is good and that is no replay (its
    signature claimed for it, committed); else a Problem: 401, or 429 once the webhook's
    refusals are over their own bucket. That bucket is looked at only after a request
    failed: junk never stops a validly signed delivery."""
    verdict = verify(webhook.auth, secret, headers, body, time.time())
    if not verdict.ok:
        raise _refused(webhook.public_id, verdict.reason, settings, limits)
    delivery_id = delivery_id_of(headers, body, verdict.timestamp, webhook.auth)
    if verdict.signature is not None:
        claimed = await crud.claim_signature(
            session,
            webhook_id=webhook.id,
            signature=verdict.signature,
            delivery_id=delivery_id,
            expires_at=_claim_expiry(settings, verdict.timestamp),
            now=datetime.now(UTC),
        )
        await session.commit()
        if claimed != delivery_id:
            reason = "this signature was used for another delivery"
            raise _refused(webhook.public_id, reason, settings, limits)
    return delivery_id


def too_many(settings: Settings, limits: RateLimiter, wait: float) -> Problem:
    return Problem(
        429,
        f"over this webhook's limit of {settings.webhook_rate_limit_per_minute} requests a minute",
        headers={"Retry-After": limits.retry_after(wait)},
    )


def _refused(public_id: str, reason: str, settings: Settings, limits: RateLimiter) -> Problem:
    """A 401, counted in the webhook's refusal bucket (and logged, without the body); a 429,
    not logged, beyond it."""
    if (wait := limits.take(f"refused:{public_id}", time.monotonic())) is not None:
        return too_many(settings, limits, wait)
    log.warning("webhook %s refused a delivery: %s", public_id, reason)
    return Problem(401, f"not authenticated: {reason}")


def _claim_expiry(settings: Settings, timestamp: int | None) -> datetime:
    """Until when a signature stays claimed: while its timestamp is within tolerance (and a
    minute more, for clocks that differ between API processes), or, with no timestamp,
    for ``WEBHOOK_REPLAY_DAYS``."""
    if timestamp is not None:
        return datetime.fromtimestamp(timestamp + TOLERANCE_SECONDS + 60, UTC)
    return datetime.now(UTC) + timedelta(days=settings.webhook_replay_days)


def delivery_id_of(headers: dict[str, str], body: bytes, timestamp: int | None, auth: str) -> str:
    """``X-Cronpilot-Delivery``, else ``X-GitHub-Delivery``, else a digest of the body."""
    for name in DELIVERY_HEADERS:
        given = headers.get(name)
        if given is None:
            continue
        fits = 0 < len(given) <= MAX_DELIVERY_ID_CHARS
        if not (fits and given.isascii() and given.isprintable()):
            message = f"must be 1-{MAX_DELIVERY_ID_CHARS} printable ASCII characters"
            raise Invalid([{"loc": ["header", name], "msg": message}])
        return given
    # No id given: the body and the signed timestamp (hmac); the body alone (github: a
    # replayed request is the same delivery); the body and its arrival (token).
    if timestamp is not None:
        stamp = str(timestamp)
    elif auth == "github":
        stamp = "github"
    else:
        stamp = str(time.time_ns())
    return "sha256:" + hashlib.sha256(stamp.encode() + b"." + body).hexdigest()
