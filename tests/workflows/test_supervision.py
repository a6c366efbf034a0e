"""A worker process ends, non-zero, when one of its Temporal workers stops by itself, and
ends with 0 when it is asked to stop."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from schema.settings import Settings
from worker import build_workers, running, until_stopped


async def test_a_worker_that_stops_by_itself_ends_the_process_with_1(
    temporal_address: str, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    # A namespace that does not exist: Temporal's worker gives up as it starts.
    missing = await Client.connect(
        temporal_address, namespace="no-such-namespace", data_converter=pydantic_data_converter
    )
    workers, deps = build_workers(missing, sessions, settings)
    try:
        async with running(workers) as ended:
            code = await asyncio.wait_for(until_stopped(ended, asyncio.Event()), 60)
    finally:
        await deps.close()
    assert code == 1


async def test_a_requested_stop_ends_the_process_with_0(
    temporal: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    queue = f"supervised-{uuid.uuid4().hex[:8]}"
    workers, deps = build_workers(
        temporal, sessions, settings.model_copy(update={"task_queue": queue})
    )
    stop = asyncio.Event()
    try:
        async with running(workers) as ended:
            asyncio.get_running_loop().call_later(1, stop.set)
            code = await asyncio.wait_for(until_stopped(ended, stop), 60)
            assert not ended.done()
    finally:
        await deps.close()
    assert code == 0
