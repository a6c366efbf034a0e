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

Then, unless ``--no-bare``, the same against bare Temporal on the same dev server: N
Temporal schedules created directly with temporalio's ``Client`` (ids
``bench-bare-<uuid>-<i>``, same bounded concurrency), each the shape Cronpilot gives a
one-time task (a single UTC calendar instant about ``--lead`` seconds ahead, one remaining
action, a 60 s catch-up window). Each starts a ``BareLatenessWorkflow`` on a task queue of
its own, served by a worker in this process, which runs one activity that records
``time.time()`` the moment it starts (the equivalent of Cronpilot's action start) and the
workflow's ``start_time``. Both are measured against the scheduled instant; the bare
schedules are deleted afterwards. The last line is the ratio of the action-start p50s.

Usage: ``.venv/bin/python bench/fire_lateness.py [--n 100] [--no-bare]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from _harness import (
    DevServer,
    HookServer,
    add_server_arguments,
    bounded,
    cronpilot_dev,
    percentile,
    run,
)
from temporalio import activity, workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleHandle,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

FINAL = ("succeeded", "failed", "skipped", "cancelled", "timed_out")
LABEL_WIDTH = 54


# -- bare Temporal baseline ------------------------------------------------------------------


@dataclass
class BareRecorder:
    """What the bare activities saw, per schedule index: (activity start, workflow start),
    both wall-clock seconds; every start is kept, so duplicates show."""

    starts: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    count: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, index: int, activity_start: float, workflow_start: float) -> None:
        self.starts.setdefault(index, []).append((activity_start, workflow_start))
        self.count += 1
        self.changed.set()

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` activities started in all; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True


BARE = BareRecorder()


@activity.defn
async def record_bare_start(index: int, workflow_start: float) -> None:
    """The bare baseline's action: note when it started."""
    BARE.record(index, time.time(), workflow_start)


@workflow.defn
class BareLatenessWorkflow:
    """One activity that records its start: the least a scheduled run with an action does."""

    @workflow.run
    async def run(self, index: int) -> None:
        await workflow.execute_activity(
            record_bare_start,
            args=[index, workflow.info().start_time.timestamp()],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@dataclass
class BareResult:
    action_start: list[float]
    workflow_start: list[float]
    run_at: datetime
    complete: bool
    duplicates: int


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
    parser.add_argument(
        "--no-bare",
        action="store_true",
        help="skip the bare-Temporal baseline (N schedules created directly on the dev server)",
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
        return f"{label:<{LABEL_WIDTH}} {0:>5}" + "        -" * 4
    ms = [v * 1000 for v in values_s]
    cells = "".join(f"{percentile(ms, q):>9.0f}" for q in (50, 95, 99, 100))
    return f"{label:<{LABEL_WIDTH}} {len(ms):>5}{cells}"


def _bare_schedule(index: int, run_at: datetime, schedule_id: str, queue: str) -> Schedule:
    """The schedule Cronpilot would make for a one-time task (api/scheduling.py), whose
    action starts a ``BareLatenessWorkflow`` instead of a ``TaskWorkflow``."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            BareLatenessWorkflow.run, index, id=schedule_id, task_queue=queue
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(run_at.second)],
                    minute=[ScheduleRange(run_at.minute)],
                    hour=[ScheduleRange(run_at.hour)],
                    day_of_month=[ScheduleRange(run_at.day)],
                    month=[ScheduleRange(run_at.month)],
                    year=[ScheduleRange(run_at.year)],
                )
            ],
            time_zone_name="UTC",
        ),
        policy=SchedulePolicy(catchup_window=timedelta(seconds=60)),
        state=ScheduleState(limited_actions=True, remaining_actions=1),
    )


async def _delete_schedules(handles: list[ScheduleHandle], concurrency: int) -> int:
    """Delete the bare schedules, best effort; how many could not be deleted."""

    async def delete(handle: ScheduleHandle) -> bool:
        try:
            await handle.delete()
        except Exception:
            return False
        return True

    return (await bounded((delete(h) for h in handles), concurrency)).count(False)


async def _bare(args: argparse.Namespace, n: int, dev: DevServer) -> BareResult:
    """N bare Temporal schedules due the same second on the dev server; their lateness."""
    client = await Client.connect(dev.temporal_address)
    run_uuid = uuid.uuid4()
    queue = f"bench-bare-{run_uuid.hex[:8]}"
    handles: list[ScheduleHandle] = []

    async def create(index: int, run_at: datetime) -> None:
        schedule_id = f"bench-bare-{run_uuid}-{index}"
        handles.append(
            await client.create_schedule(
                schedule_id, _bare_schedule(index, run_at, schedule_id, queue)
            )
        )

    # The workflow class lives in __main__, which the sandbox cannot re-import; a baseline
    # needs no sandbox. (Cronpilot's worker does sandbox TaskWorkflow, a small extra cost.)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BareLatenessWorkflow],
        activities=[record_bare_start],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=max(200, n),
    ):
        try:
            run_at_ts = math.ceil(time.time() + args.lead)
            run_at = datetime.fromtimestamp(run_at_ts, UTC)
            print(
                f"bare Temporal: creating {n} schedules due {run_at.isoformat()} on {queue} ...",
                flush=True,
            )
            started = time.time()
            await bounded((create(i, run_at) for i in range(n)), args.concurrency)
            done = time.time()
            print(
                f"bare Temporal: created {n} schedules in {done - started:.1f} s "
                f"({n / (done - started):.1f}/s), {run_at_ts - done:.1f} s before run_at",
                flush=True,
            )
            if done > run_at_ts - 1:
                print(
                    "WARNING: creation ended less than 1 s before run_at; raise --lead", flush=True
                )
            complete = await BARE.wait_for(n, max(0.0, run_at_ts - time.time()) + args.timeout)
        finally:
            failed = await _delete_schedules(handles, args.concurrency)
            if failed:
                print(f"bare Temporal: {failed} schedules could not be deleted", flush=True)
    firsts = [starts[0] for starts in BARE.starts.values()]
    return BareResult(
        action_start=[activity_start - run_at_ts for activity_start, _ in firsts],
        workflow_start=[workflow_start - run_at_ts for _, workflow_start in firsts],
        run_at=run_at,
        complete=complete and len(firsts) == n,
        duplicates=sum(len(starts) - 1 for starts in BARE.starts.values()),
    )


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

    bare = None if args.no_bare else await _bare(args, n, dev)

    print()
    print(f"fire lateness: {n} one-time tasks due {run_at.isoformat()} ({dev.database})")
    print(f"requests arrived   {len(arrival_lateness)}/{n} (duplicates: {duplicates})")
    print(f"executions         {len(start_lateness)}/{n} succeeded with scheduled_at; ", end="")
    print("by status " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none"))
    print(f"user stats         {counts}")
    if bare is not None:
        print(
            f"bare Temporal      {len(bare.action_start)}/{n} activities started "
            f"(duplicates: {bare.duplicates}), schedules due {bare.run_at.isoformat()}"
        )
    print()
    header = f"{'lateness (ms)':<{LABEL_WIDTH}} {'n':>5}"
    print(header + "".join(f"{q:>9}" for q in ("p50", "p95", "p99", "max")))
    print(_row("action start (request arrival - run_at)", arrival_lateness))
    print(_row("workflow start (started_at - scheduled_at)", start_lateness))
    ok = all_arrived and len(start_lateness) == n
    if bare is not None:
        print(_row("bare Temporal: action start (activity start - run_at)", bare.action_start))
        print(_row("bare Temporal: workflow start", bare.workflow_start))
        if arrival_lateness and bare.action_start:
            ours = percentile(arrival_lateness, 50)
            base = percentile(bare.action_start, 50)
            ratio = f"{ours / base:.2f}" if base > 0 else "-"
            print(
                f"\nratio cronpilot / bare, action start p50: {ratio} "
                f"({ours * 1000:.0f} ms / {base * 1000:.0f} ms)"
            )
        ok = ok and bare.complete
    if not ok:
        print("\nINCOMPLETE: not every task (or bare schedule) ran in time", flush=True)
    return 0 if ok else 1


def main() -> None:
    args = _parser().parse_args()
    if args.n < 1:
        sys.exit("--n must be at least 1")
    sys.exit(run(_bench(args)))


if __name__ == "__main__":
    main()
