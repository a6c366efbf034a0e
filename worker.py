"""The Temporal worker: ``TaskWorkflow`` and every activity, on the main and code queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities._action import ActionDeps
from activities.chain import ChainActivities
from activities.email_trigger import EmailTriggerActivities
from activities.history import HistoryActivities
from activities.notify import NotifyActivities
from activities.registry import action_activities
from activities.run_code import remove_leftover_runs
from api.scheduling import ensure_retention_schedule
from schema.db import create_engine, create_sessionmaker
from schema.settings import Settings, get_settings
from schema.temporal import connect, ensure_search_attributes
from schema.temporal_ids import code_queue, wait_queue
from workflows.chain import ChainStepWorkflow, ChainWorkflow
from workflows.email_poll import EmailPollWorkflow
from workflows.history import RecordExecutionWorkflow
from workflows.notify import NotifyWorkflow
from workflows.retention import RetentionWorkflow
from workflows.task import TaskWorkflow
from workflows.trigger import TriggerWorkflow

log = logging.getLogger("cronpilot.worker")
MAX_CONCURRENT_ACTIVITIES = 200
LIVE_LOG_INTERVAL = timedelta(seconds=1)
MAX_CONCURRENT_CODE_RUNS = 8
# Runs queued by an overlap policy, each waiting (cheaply) for the runs before it.
MAX_WAITING_RUNS = 1000
# Every workflow type; the replay test replays recorded histories against these.
WORKFLOWS: list[type] = [
    TaskWorkflow,
    RecordExecutionWorkflow,
    RetentionWorkflow,
    TriggerWorkflow,
    EmailPollWorkflow,
    ChainWorkflow,
    ChainStepWorkflow,
    NotifyWorkflow,
]


def build_workers(
    client: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[list[Worker], ActionDeps]:
    """The main worker (workflows, history and actions) and the code worker, as
    ``WORKER_QUEUES`` asks, and the dependencies of their actions (close them after)."""
    task_queue = settings.task_queue
    history = HistoryActivities(sessions, client)
    email = EmailTriggerActivities(sessions, client, settings)
    deps = ActionDeps(settings, sessions)
    notify = NotifyActivities(deps)
    chain = ChainActivities(sessions, settings)
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
                    history.write_execution_record,
                    history.delete_old_executions,
                    history.settle_unrecorded_executions,
                    history.last_execution,
                    email.poll_mailbox,
                    notify.notify_run,
                    chain.start_chain,
                    chain.record_steps,
                    chain.load_task,
                    *action_activities(deps, "main"),
                ],
                max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
                # Heartbeats carry an action's log: a running execution shows it this late.
                max_heartbeat_throttle_interval=LIVE_LOG_INTERVAL,
            )
        )
        workers.append(
            Worker(
                client,
                task_queue=wait_queue(task_queue),
                activities=[history.wait_for_runs],
                max_concurrent_activities=MAX_WAITING_RUNS,
            )
        )
    code_activities = action_activities(deps, "code")
    if code_activities and settings.worker_queues in ("all", "code"):
        remove_leftover_runs()  # a killed worker's rendered programs (secrets) and cgroups
        workers.append(
            Worker(
                client,
                task_queue=code_queue(task_queue),
                activities=code_activities,
                max_concurrent_activities=MAX_CONCURRENT_CODE_RUNS,
                max_heartbeat_throttle_interval=LIVE_LOG_INTERVAL,
            )
        )
    return workers, deps


@contextlib.asynccontextmanager
async def running_workers(settings: Settings, client: Client) -> AsyncIterator[asyncio.Task[None]]:
    """Run the workers until the block exits, then shut them down gracefully. Yields a task
    that ends when a worker stops by itself (a fatal error), which the caller must watch."""
    engine = create_engine(settings.resolved_database_url)
    try:
        await ensure_search_attributes(client)
        await ensure_retention_schedule(
            client, settings.task_queue, settings.execution_retention_days
        )
        workers, deps = build_workers(client, create_sessionmaker(engine), settings)
        try:
            async with running(workers) as ended:
                yield ended
        finally:
            await deps.close()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running(workers: Sequence[Worker]) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``workers`` until the block exits, then shut them down; yields a task that ends
    as soon as one of them stops by itself."""
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    ended = asyncio.create_task(_first_to_end(tasks))
    try:
        yield ended
    finally:
        ended.cancel()
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first_to_end(tasks: list[asyncio.Task[None]]) -> None:
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        error = None if task.cancelled() else task.exception()
        log.error("a Temporal worker stopped by itself: %r", error or "no error given")


async def until_stopped(ended: asyncio.Task[None], stop: asyncio.Event) -> int:
    """0 once ``stop`` is set; 1 as soon as a worker stops by itself."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    return 0 if stop.is_set() else 1


async def supervise(settings: Settings, client: Client, stop: asyncio.Event) -> int:
    """Serve until ``stop`` is set (0) or until a worker stops by itself (1)."""
    async with running_workers(settings, client) as ended:
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        return await until_stopped(ended, stop)


async def serve(settings: Settings) -> int:
    """Run the worker until SIGINT, SIGTERM or SIGHUP; the process's exit code."""
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    return await supervise(settings, client, stop)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(asyncio.run(serve(get_settings())))


if __name__ == "__main__":
    main()
