"""WORKER_QUEUES splits the main and code queues across worker deployments."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from schema.settings import Settings
from worker import build_workers


@pytest.mark.parametrize(
    ("queues", "expected"),
    [("all", ["q", "q-wait", "q-code"]), ("main", ["q", "q-wait"]), ("code", ["q-code"])],
)
async def test_worker_queues(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    queues: str,
    expected: list[str],
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"  # workers are registered with the client per queue
    chosen = settings.model_copy(update={"task_queue": queue, "worker_queues": queues})
    workers, deps = build_workers(temporal, sessions, chosen)
    assert [worker.task_queue.replace(queue, "q") for worker in workers] == expected
    await deps.close()
