"""Executions per second, end to end, against bare Temporal on the same dev server.

Starts a private ``cronpilot dev`` (fresh temporary data dir: SQLite and the Temporal dev
server persisted to a file there, as the design's measurements assume; ``--database-url``
for PostgreSQL) and a tiny recording HTTP server in this process.

1. Cronpilot: creates one recurring task (``interval_seconds=86400``, paused at once, so it
   never fires by itself) whose webhook action POSTs to the recording server, starts N runs
   with ``POST /api/tasks/{id}/run`` (at most ``--concurrency`` requests in flight) and
   measures the wall time from the first start until ``GET /api/tasks/{id}/stats`` counts
   all N executions and ``GET /api/tasks/{id}/executions?status=running`` is empty (polled
   every 0.2 s). Each run is a ``TaskWorkflow``: record-started, the webhook and
   record-finished activities, two of them writing to the database.
2. Bare Temporal, same dev server: a ``BareWorkflow`` defined here runs one no-op activity,
   served by a worker in this process on its own task queue; N are started (same bound on
   starts in flight) and all results awaited.

Prints both rates and their ratio. ``--warmup`` runs (default 1 of each, not counted) come
first, so neither side pays its first-workflow start-up cost inside the measurement.

Usage: ``.venv/bin/python bench/throughput.py [--n 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from _harness import DevServer, HookServer, add_server_arguments, bounded, cronpilot_dev, run
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

FINAL = ("succeeded", "failed", "skipped", "cancelled", "timed_out")
POLL_INTERVAL = 0.2


@activity.defn
async def noop() -> None:
    """The bare baseline's only activity."""


@workflow.defn
class BareWorkflow:
    """One no-op activity: the least a Temporal run with an action can do."""

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))
        return "ok"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=500, help="executions per side (default 500)")
    parser.add_argument("--concurrency", type=int, default=50, help="starts in flight (default 50)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted runs first, per side (default 1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait per side (default 600)"
    )
    add_server_arguments(parser)
    return parser


# -- Cronpilot --------------------------------------------------------------------------------


async def _create_task(api: httpx.AsyncClient, hook_url: str) -> str:
    body = {
        "name": "bench throughput",
        "type": "recurring",
        # Runs started by hand overlap: the task allows it (the default `skip` answers 409).
        "schedule": {"interval_seconds": 86400, "overlap": "allow_all"},
        "action": {"type": "webhook", "config": {"url": hook_url, "method": "POST"}},
        "retry": {"max_attempts": 1},
        "tags": ["bench"],
    }
    response = await api.post("/api/tasks", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/tasks: {response.status_code} {response.text}")
    task_id: str = response.json()["id"]
    (await api.post(f"/api/tasks/{task_id}/pause")).raise_for_status()
    return task_id


async def _start_run(api: httpx.AsyncClient, task_id: str) -> str:
    response = await api.post(f"/api/tasks/{task_id}/run")
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/tasks/{task_id}/run: {response.status_code}")
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def _all_final(api: httpx.AsyncClient, task_id: str, total: int, timeout: float) -> None:
    """Poll until the task has ``total`` executions and none running."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await api.get(f"/api/tasks/{task_id}/stats")
        stats.raise_for_status()
        if stats.json()["total"] >= total:
            running = await api.get(
                f"/api/tasks/{task_id}/executions", params={"status": "running", "limit": 1}
            )
            running.raise_for_status()
            if not running.json()["items"]:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"executions not all final within {timeout:.0f} s")
        await asyncio.sleep(POLL_INTERVAL)


async def _all_executions(api: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = await api.get(f"/api/tasks/{task_id}/executions", params=params)
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def _cronpilot(
    args: argparse.Namespace, hook: HookServer, dev: DevServer
) -> tuple[float, float]:
    """Seconds for N executions: by polling, and by the records' last finished_at."""
    n: int = args.n
    async with dev.client(max_connections=args.concurrency + 2) as api:
        task_id = await _create_task(api, hook.url("throughput"))
        if args.warmup:
            await bounded((_start_run(api, task_id) for _ in range(args.warmup)), args.concurrency)
            await _all_final(api, task_id, args.warmup, args.timeout)
        print(f"cronpilot: starting {n} runs of task {task_id} ...", flush=True)
        first_start = time.time()
        began = time.perf_counter()
        workflow_ids = set(
            await bounded((_start_run(api, task_id) for _ in range(n)), args.concurrency)
        )
        started = time.perf_counter() - began
        print(f"cronpilot: {n} runs started in {started:.1f} s ({n / started:.1f}/s)", flush=True)
        await _all_final(api, task_id, args.warmup + n, args.timeout)
        elapsed = time.perf_counter() - began
        ours = [e for e in await _all_executions(api, task_id) if e["workflow_id"] in workflow_ids]
    statuses: dict[str, int] = {}
    for execution in ours:
        statuses[execution["status"]] = statuses.get(execution["status"], 0) + 1
    last_finish = max(datetime.fromisoformat(e["finished_at"]).timestamp() for e in ours)
    print(
        f"cronpilot: {len(ours)}/{n} executions by status {statuses}; "
        f"webhook requests {hook.count - args.warmup}",
        flush=True,
    )
    if len(ours) != n or statuses.get("succeeded", 0) != n:
        raise RuntimeError("not every Cronpilot run succeeded")
    return elapsed, last_finish - first_start


# -- bare Temporal ----------------------------------------------------------------------------


async def _bare(args: argparse.Namespace, dev: DevServer) -> float:
    """Seconds for N bare workflows, from the first start to the last result."""
    n: int = args.n
    client = await Client.connect(dev.temporal_address)
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one() -> str:
        async with semaphore:
            handle = await client.start_workflow(
                BareWorkflow.run, id=f"bench-bare-{uuid.uuid4()}", task_queue=queue
            )
        return await handle.result()

    # The workflow class lives in __main__, which the sandbox cannot re-import; a baseline
    # needs no sandbox. (Cronpilot's worker does sandbox TaskWorkflow, a small extra cost.)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BareWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=200,
    ):
        await asyncio.gather(*(one() for _ in range(args.warmup)))
        print(f"bare Temporal: starting {n} workflows on {queue} ...", flush=True)
        began = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), args.timeout)
        elapsed = time.perf_counter() - began
    if results.count("ok") != n:
        raise RuntimeError("not every bare workflow returned")
    return elapsed


async def _bench(args: argparse.Namespace) -> None:
    n: int = args.n
    async with HookServer() as hook, cronpilot_dev(args) as dev:
        polled, recorded = await _cronpilot(args, hook, dev)
        bare = await _bare(args, dev)
    ours = n / polled
    baseline = n / bare
    print()
    print(f"throughput: {n} executions per side, {args.concurrency} starts in flight")
    print(f"  database                  {dev.database}")
    print(f"  cronpilot (polled)        {polled:7.2f} s  {ours:7.1f} executions/s")
    print(f"  cronpilot (last finish)   {recorded:7.2f} s  {n / recorded:7.1f} executions/s")
    print(f"  bare Temporal, 1 activity {bare:7.2f} s  {baseline:7.1f} workflows/s")
    print(f"  ratio cronpilot / bare    {ours / baseline:7.2f}")


def main() -> None:
    args = _parser().parse_args()
    if args.n < 1 or args.concurrency < 1 or args.warmup < 0:
        sys.exit("--n and --concurrency must be at least 1, --warmup at least 0")
    run(_bench(args))


if __name__ == "__main__":
    main()
