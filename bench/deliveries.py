"""Webhook deliveries: how fast the receiver accepts them, and how fast they run, against bare
Temporal signal-with-start on the same dev server.

Starts a private ``cronpilot dev`` (see ``_harness.py``) and a recording HTTP server.

1. Cronpilot: a webhook-trigger task (``concurrency`` from ``--task-concurrency``) whose
   webhook action POSTs to the recording server, and one webhook (``--auth``: ``token``,
   or ``hmac``/``github``, whose every delivery also claims its signature in the
   database, so that a replay is refused by every API process). N
   deliveries, each with its own ``X-Cronpilot-Delivery``, are sent at once (at most
   ``--concurrency`` in flight). Measured: the latency of each 202 (p50, p99, max),
   accepted deliveries per second (N over the time until the last 202), and the time until
   the recording server has seen all N runs.
2. Bare Temporal, same server: N ``signal_with_start`` calls to one workflow defined here
   that only counts signals (what the receiver's 202 waits for, without the API around it),
   with the same bound on calls in flight: their latency and rate.

Usage: ``.venv/bin/python bench/deliveries.py [--n 200]``
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
import uuid

from _harness import (
    DevServer,
    HookServer,
    add_server_arguments,
    bounded,
    cronpilot_dev,
    percentile,
    run,
)
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.signatures import sign


@workflow.defn
class CountingWorkflow:
    """Takes signals, counts them; the baseline of what a delivery's 202 waits for."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.signal
    def deliver(self, _: str) -> None:
        self.count += 1

    @workflow.run
    async def run(self, expected: int) -> int:
        await workflow.wait_condition(lambda: self.count >= expected)
        return self.count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="deliveries per side (default 200)")
    parser.add_argument(
        "--concurrency", type=int, default=200, help="requests in flight (default 200)"
    )
    parser.add_argument(
        "--task-concurrency", type=int, default=10, help="the task's concurrency (default 10)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait per side")
    parser.add_argument(
        "--auth",
        choices=("token", "hmac", "github"),
        default="token",
        help="the webhook's auth mode (default token; hmac and github claim each signature "
        "in the database)",
    )
    add_server_arguments(parser)
    return parser


def _row(label: str, latencies: list[float], elapsed: float, n: int) -> str:
    ms = sorted(value * 1000 for value in latencies)
    return (
        f"  {label:<30} {n / elapsed:7.1f}/s   p50 {percentile(ms, 50):7.1f} ms   "
        f"p99 {percentile(ms, 99):7.1f} ms   max {ms[-1]:7.1f} ms"
    )


async def _cronpilot(
    args: argparse.Namespace, hook: HookServer, dev: DevServer
) -> tuple[list[float], float, float]:
    n: int = args.n
    token = f"deliveries-{uuid.uuid4().hex[:8]}"
    async with dev.client(max_connections=args.concurrency + 2) as api:
        body = {
            "name": "bench deliveries",
            "type": "trigger",
            "trigger": {"kind": "webhook"},
            "concurrency": args.task_concurrency,
            "action": {"type": "webhook", "config": {"url": hook.url(token), "method": "POST"}},
            "retry": {"max_attempts": 1},
            "tags": ["bench"],
        }
        created = await api.post("/api/tasks", json=body)
        created.raise_for_status()
        task_id = created.json()["id"]
        hook_made = await api.post(f"/api/tasks/{task_id}/webhook", json={"auth": args.auth})
        hook_made.raise_for_status()
        webhook = hook_made.json()
        path = "/api/webhooks/" + webhook["webhook_id"]
        latencies: list[float] = []

        async def deliver(index: int) -> None:
            content = json.dumps({"n": index}).encode()
            headers = {
                **_credentials(args.auth, webhook["secret"], content),
                "X-Cronpilot-Delivery": f"d-{index}",
                "Content-Type": "application/json",
            }
            began = time.perf_counter()
            response = await api.post(path, content=content, headers=headers)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 202:
                raise RuntimeError(f"delivery {index}: {response.status_code} {response.text}")

        print(f"cronpilot: {n} deliveries to task {task_id} ...", flush=True)
        began = time.perf_counter()
        await bounded((deliver(index) for index in range(n)), args.concurrency)
        accepted = time.perf_counter() - began
        if not await hook.wait_for(n, args.timeout):
            raise RuntimeError(f"only {hook.count} of {n} runs arrived")
        ran = time.perf_counter() - began
        await api.delete(f"/api/tasks/{task_id}")
    return latencies, accepted, ran


def _credentials(auth: str, secret: str, body: bytes) -> dict[str, str]:
    """The headers that authenticate ``body`` in ``auth`` mode."""
    if auth == "hmac":
        return {"X-Cronpilot-Signature": sign(secret, body, int(time.time()))}
    if auth == "github":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    return {"X-Cronpilot-Token": secret}


async def _bare(args: argparse.Namespace, dev: DevServer) -> tuple[list[float], float]:
    n: int = args.n
    client = await Client.connect(dev.temporal_address)
    queue = f"bench-signal-{uuid.uuid4().hex[:8]}"
    workflow_id = f"bench-signal-{uuid.uuid4()}"
    latencies: list[float] = []

    async def signal_one(index: int) -> None:
        began = time.perf_counter()
        await client.start_workflow(
            CountingWorkflow.run,
            n,
            id=workflow_id,
            task_queue=queue,
            start_signal="deliver",
            start_signal_args=[f"d-{index}"],
        )
        latencies.append(time.perf_counter() - began)

    async with Worker(
        client,
        task_queue=queue,
        workflows=[CountingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        began = time.perf_counter()
        await bounded((signal_one(index) for index in range(n)), args.concurrency)
        elapsed = time.perf_counter() - began
        await client.get_workflow_handle(workflow_id).result()
    return latencies, elapsed


async def _bench(args: argparse.Namespace) -> None:
    n: int = args.n
    async with HookServer() as hook, cronpilot_dev(args) as dev:
        ours, accepted, ran = await _cronpilot(args, hook, dev)
        bare, bare_elapsed = await _bare(args, dev)
    print()
    print(f"deliveries: {n} per side, {args.concurrency} in flight, auth {args.auth}")
    print(f"  database                       {dev.database}")
    print(_row("cronpilot 202 (accepted)", ours, accepted, n))
    print(
        f"  cronpilot runs done            {n / ran:7.1f}/s   ({ran:.1f} s for all {n}, "
        f"task concurrency {args.task_concurrency})"
    )
    print(_row("bare signal-with-start", bare, bare_elapsed, n))


def main() -> None:
    args = _parser().parse_args()
    if args.n < 1 or args.concurrency < 1 or args.task_concurrency < 1:
        sys.exit("--n, --concurrency and --task-concurrency must be at least 1")
    run(_bench(args))


if __name__ == "__main__":
    main()
