"""How late do one-time tasks due the same second start their action?

Starts a private ``cronpilot dev`` (fresh temporary data dir: SQLite and the Temporal dev
server persisted to a file there, as the design's measurements assume; ``--database-url``
for PostgreSQL) and a tiny recording HTTP server in this process. Creates N one-time tasks
through ``POST /api/tasks`` (bounded concurrency), all with ``schedule.run_at`` = the same
whole second about ``--lead`` seconds ahead, each with a webhook action that POSTs to
``/hook/<token>`` on the recording server. Then waits until all N requests arrived and all N
executions are final, and prints p50/p95/p99/max of two lateness measures:

- action start: arrival time of the webhook request (``time.time()``, wall clock, since
  ``run_at`` is wall clock) minus ``run_at``: what a user sees, end to end;
- workflow start: the execution's ``started_at - scheduled_at`` from
  ``GET /api/tasks/{id}/executions``: Temporal's share (schedule fire to workflow start).

Usage: ``.venv/bin/python bench/fire_lateness.py [--n 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from _harness import (
    DevServer,
    HookServer,
    add_server_arguments,
    bounded,
    cronpilot_dev,
    percentile,
)

FINAL = ("succeeded", "failed", "skipped", "cancelled", "timed_out")


@dataclass
class Created:
    token: str
    task_id: str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100, help="number of tasks (default 100)")
    parser.add_argument(
        "--lead",
        type=float,
        default=15.0,
        help="seconds from now to run_at, rounded up to a whole second (default 15); "
        "all tasks must be created before then",
    )
    parser.add_argument(
        "--concurrency", type=int, default=10, help="task creations in flight (default 10)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds after run_at to wait for all requests (default 120)",
    )
    add_server_arguments(parser)
    return parser


def _task_body(token: str, hook_url: str, run_at: datetime) -> dict[str, Any]:
    return {
        "name": f"bench lateness {token[:8]}",
        "type": "one_time",
        "schedule": {"run_at": run_at.isoformat()},
        "action": {
            "type": "webhook",
            "config": {"url": hook_url, "method": "POST", "body": {"token": token}},
        },
        "retry": {"max_attempts": 1},
        "tags": ["bench"],
    }


async def _create(api: httpx.AsyncClient, body: dict[str, Any], token: str) -> Created:
    response = await api.post("/api/tasks", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/tasks: {response.status_code} {response.text}")
    return Created(token=token, task_id=response.json()["id"])


async def _wait_final(api: httpx.AsyncClient, n: int, timeout: float) -> dict[str, int]:
    """Poll the user's execution counts until n are final; the last counts seen."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get("/api/stats")
        response.raise_for_status()
        counts: dict[str, int] = response.json()["executions"]
        if sum(counts.get(s, 0) for s in FINAL) >= n or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


async def _executions(api: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/tasks/{task_id}/executions", params={"limit": 10})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _row(label: str, values_s: list[float]) -> str:
    if not values_s:
        return f"{label:<44} {0:>5}" + "        -" * 4
    ms = [v * 1000 for v in values_s]
    cells = "".join(f"{percentile(ms, q):>9.0f}" for q in (50, 95, 99, 100))
    return f"{label:<44} {len(ms):>5}{cells}"


async def _bench(args: argparse.Namespace) -> int:
    n: int = args.n
    async with HookServer() as hook, cronpilot_dev(args) as dev:
        return await _measure(args, n, hook, dev)


async def _measure(args: argparse.Namespace, n: int, hook: HookServer, dev: DevServer) -> int:
    async with dev.client(max_connections=args.concurrency + 2) as api:
        run_at_ts = math.ceil(time.time() + args.lead)
        run_at = datetime.fromtimestamp(run_at_ts, UTC)
        tokens = [uuid.uuid4().hex for _ in range(n)]
        print(f"creating {n} one-time tasks due {run_at.isoformat()} ...", flush=True)
        started = time.time()
        created = await bounded(
            (_create(api, _task_body(t, hook.url(t), run_at), t) for t in tokens),
            args.concurrency,
        )
        done = time.time()
        print(
            f"created {n} tasks in {done - started:.1f} s "
            f"({n / (done - started):.1f}/s), {run_at_ts - done:.1f} s before run_at",
            flush=True,
        )
        if done > run_at_ts - 1:
            print("WARNING: creation ended less than 1 s before run_at; raise --lead", flush=True)

        all_arrived = await hook.wait_for(n, max(0.0, run_at_ts - time.time()) + args.timeout)
        counts = await _wait_final(api, n, timeout=60 if all_arrived else 5)
        executions = await bounded((_executions(api, c.task_id) for c in created), 10)

    arrival_lateness = [
        min(hook.arrivals[c.token]) - run_at_ts for c in created if c.token in hook.arrivals
    ]
    start_lateness: list[float] = []
    statuses: dict[str, int] = {}
    for items in executions:
        for item in items:
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
            if item["status"] == "succeeded" and item["scheduled_at"]:
                started_at = datetime.fromisoformat(item["started_at"])
                scheduled_at = datetime.fromisoformat(item["scheduled_at"])
                start_lateness.append((started_at - scheduled_at).total_seconds())
    duplicates = sum(len(times) - 1 for times in hook.arrivals.values())

    print()
    print(f"fire lateness: {n} one-time tasks due {run_at.isoformat()} ({dev.database})")
    print(f"requests arrived   {len(arrival_lateness)}/{n} (duplicates: {duplicates})")
    print(f"executions         {len(start_lateness)}/{n} succeeded with scheduled_at; ", end="")
    print("by status " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none"))
    print(f"user stats         {counts}")
    print()
    print(f"{'lateness (ms)':<44} {'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    print(_row("action start (request arrival - run_at)", arrival_lateness))
    print(_row("workflow start (started_at - scheduled_at)", start_lateness))
    ok = all_arrived and len(start_lateness) == n
    if not ok:
        print("\nINCOMPLETE: not every task ran and succeeded in time", flush=True)
    return 0 if ok else 1


def main() -> None:
    args = _parser().parse_args()
    # SIGTERM stops like Ctrl-C: the dev server and the bench database are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.n < 1:
        sys.exit("--n must be at least 1")
    try:
        sys.exit(asyncio.run(_bench(args)))
    except KeyboardInterrupt:
        sys.exit("interrupted")


if __name__ == "__main__":
    main()
