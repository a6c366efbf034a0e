"""The Temporal worker: ``TaskWorkflow`` and every activity, on the main and code queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import Worker

from activities._action import ActionDeps
from activities.history import HistoryActivities
from activities.registry import action_activities
from schema.db import create_engine, create_sessionmaker
from schema.settings import Settings, get_settings
from schema.temporal import connect, ensure_search_attributes
from workflows.retention import RETENTION_SCHEDULE_ID, RetentionWorkflow
from workflows.task import CODE_QUEUE_SUFFIX, TaskWorkflow

log = logging.getLogger("cronpilot.worker")
MAX_CONCURRENT_ACTIVITIES = 200
MAX_CONCURRENT_CODE_RUNS = 8
# Every workflow type; the replay test replays recorded histories against these.
WORKFLOWS: list[type] = [TaskWorkflow, RetentionWorkflow]


def build_workers(
    client: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[list[Worker], ActionDeps]:
    """The main worker (workflows, history and actions) and the code worker, as
    ``WORKER_QUEUES`` asks, and the dependencies of their actions (close them after)."""
    task_queue = settings.task_queue
    history = HistoryActivities(sessions, client)
    deps = ActionDeps(settings, sessions)
    workers = []
    if settings.worker_queues in ("all", "main"):
        workers.append(
            Worker(
                client,
                task_queue=task_queue,
                workflows=WORKFLOWS,
                activities=[
                    history.record_execution_started,
                    history.record_execution_finished,
                    history.delete_old_executions,
                    history.settle_unrecorded_executions,
                    *action_activities(deps, "main"),
                ],
                max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
            )
        )
    code_activities = action_activities(deps, "code")
    if code_activities and settings.worker_queues in ("all", "code"):
        workers.append(
            Worker(
                client,
                task_queue=task_queue + CODE_QUEUE_SUFFIX,
                activities=code_activities,
                max_concurrent_activities=MAX_CONCURRENT_CODE_RUNS,
            )
        )
    return workers, deps


async def ensure_retention_schedule(client: Client, settings: Settings) -> None:
    """The daily schedule that trims history, created or brought up to date."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RetentionWorkflow.run,
            settings.execution_retention_days,
            id=RETENTION_SCHEDULE_ID,
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=["17 * * * *"], time_zone_name="UTC"),
    )
    try:
        await client.create_schedule(RETENTION_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:

        def _replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(RETENTION_SCHEDULE_ID).update(_replace)


@contextlib.asynccontextmanager
async def running_workers(settings: Settings, client: Client) -> AsyncIterator[None]:
    """Run the workers until the block exits, then shut them down gracefully."""
    engine = create_engine(settings.resolved_database_url)
    await ensure_search_attributes(client)
    await ensure_retention_schedule(client, settings)
    workers, deps = build_workers(client, create_sessionmaker(engine), settings)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        await deps.close()
        await engine.dispose()


async def serve(settings: Settings) -> None:
    """Run the worker until SIGINT or SIGTERM."""
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_workers(settings, client):
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(get_settings()))


if __name__ == "__main__":
    main()
