"""What the webhook receiver keeps in memory: a token bucket per webhook, and use counts
written to the database in batches (the receiver never waits on those writes). The one
write a delivery waits for is its signature's claim (``crud.claim_signature``): replays
must be refused by every API process."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema import crud

log = logging.getLogger("cronpilot.webhooks")
FLUSH_EVERY_SECONDS = 2.0
MAX_BUCKETS = 100_000


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

    def peek(self, key: str, now: float) -> float | None:
        """Like ``take``, without taking: None when a token is there."""
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        return None if tokens >= 1 else (1 - tokens) / self.rate

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
