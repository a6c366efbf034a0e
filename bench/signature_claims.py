"""What the replay ledger costs the webhook receiver: one upsert per signed delivery.

Every delivery already reads its webhook and task (``crud.webhook_target``); a signed one
(``hmac``, ``github``) also claims its signature (``crud.claim_signature``, one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` and a commit), so that a replay is
refused by every API process. This measures both, on PostgreSQL (a fresh database on the
server of ``--database-url``) and on SQLite (a temporary file), one at a time and with
``--concurrency`` in flight, as the receiver runs them: in one session, the claim after the
read. The same run's ``deliveries.py`` puts them beside Temporal's signal-with-start, which
every 202 waits for.

Usage: ``.venv/bin/python bench/signature_claims.py [--n 2000] [--concurrency 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _harness import _fresh_database, bounded, percentile, run
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema import crud
from schema.db import create_engine, create_sessionmaker
from schema.migrate import upgrade
from schema.tasks import TaskSpec

TASK = {
    "name": "bench claims",
    "type": "trigger",
    "trigger": {"kind": "webhook"},
    "action": {"type": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
}


async def _webhook(sessions: async_sessionmaker[AsyncSession]) -> tuple[str, uuid.UUID]:
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"bench-{uuid.uuid4().hex[:8]}")
        spec = TaskSpec.model_validate(TASK)
        task = await crud.create_task(session, user_id=user.id, spec=spec)
        webhook = await crud.create_webhook(
            session, task=task, auth="hmac", secret_encrypted="unused"
        )
    return webhook.public_id, webhook.id


async def _timed(
    operation: Callable[[int], Awaitable[None]], n: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def one(index: int) -> None:
        began = time.perf_counter()
        await operation(index)
        latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await bounded((one(index) for index in range(n)), concurrency)
    return latencies, time.perf_counter() - began


def _row(label: str, latencies: list[float], elapsed: float) -> str:
    ms = sorted(value * 1000 for value in latencies)
    return (
        f"  {label:<38} {len(ms) / elapsed:8.0f}/s   p50 {percentile(ms, 50):6.2f} ms   "
        f"p99 {percentile(ms, 99):6.2f} ms"
    )


async def _measure(url: str, args: argparse.Namespace) -> None:
    await asyncio.to_thread(upgrade, url)  # alembic runs a loop of its own
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    public_id, webhook_id = await _webhook(sessions)
    expires = datetime.now(UTC) + timedelta(days=30)
    run_id = secrets.token_hex(4)

    async def read(_: int) -> None:
        async with sessions() as session:
            await crud.webhook_target(session, public_id=public_id)

    async def read_and_claim(index: int) -> None:
        async with sessions() as session:
            await crud.webhook_target(session, public_id=public_id)
            await crud.claim_signature(
                session,
                webhook_id=webhook_id,
                signature=f"{run_id}-{index}",
                delivery_id=f"d-{index}",
                expires_at=expires,
                now=datetime.now(UTC),
            )
            await session.commit()

    try:
        print(f"{engine.dialect.name}: {args.n} each")
        for concurrency in (1, args.concurrency):
            await _timed(read, min(args.n, 200), concurrency)  # warm the pool
            for label, operation in (("read (every delivery)", read),):
                latencies, elapsed = await _timed(operation, args.n, concurrency)
                print(_row(f"{label}, {concurrency} in flight", latencies, elapsed))
            run_id = secrets.token_hex(4)
            latencies, elapsed = await _timed(read_and_claim, args.n, concurrency)
            print(_row(f"read + claim (signed), {concurrency} in flight", latencies, elapsed))
    finally:
        await engine.dispose()


async def _bench(args: argparse.Namespace) -> None:
    with _fresh_database(args.database_url) as url:
        await _measure(url, args)
    with tempfile.TemporaryDirectory(prefix="cronpilot-claims-") as folder:
        await _measure(f"sqlite+aiosqlite:///{Path(folder) / 'claims.db'}", args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="operations per row (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="in flight (default 50)")
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="the PostgreSQL server to make a fresh database on (dropped at the end)",
    )
    run(_bench(parser.parse_args()))


if __name__ == "__main__":
    main()
