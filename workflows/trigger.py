"""``TriggerWorkflow``: the one long-lived workflow of a trigger task (``trigger-{task_id}``).

Webhooks, events and the email poller reach it by signal-with-start (``deliver``). Each
delivery runs as a child ``TaskWorkflow`` whose id derives from the delivery id, so:

- a delivery id seen among the last ``DEDUP_WINDOW`` is dropped here, and a repeat older
  than that is still refused by Temporal (the child's id is taken);
- at most ``concurrency`` children run at once; the rest wait in arrival order;
- while the task is paused, accepted deliveries wait; they run once it is resumed.

The history stays bounded: when Temporal suggests it (or after ``ROLL_AFTER`` deliveries),
the workflow continues as new with the queue, the dedup window and the runs still going
(children outlive it: ``ParentClosePolicy.ABANDON``); the new run counts those against
``concurrency`` until each has ended (a ``wait_for_runs`` activity per run). Deliveries that
arrive meanwhile are carried over. While the queue's payloads weigh more than
``CARRY_LIMIT`` the roll-over waits for it to shrink (continue-as-new input has a size
limit); the history has ample room for that. Runs from before patch ``roll-without-drain``
let their children end first.

Runs in flight outlive deployments: change this module only in replay-safe ways (a new path
behind ``workflow.patched``, input fields added with defaults) and keep the replay test
(tests/workflows/test_replay.py) green.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from schema.actions import STORED
    from schema.tasks import RunRef, TaskRunInput, TaskSpec, TriggerConfig, TriggerInput
    from schema.temporal_ids import (
        CONFIGURE_SIGNAL,
        DELIVER_SIGNAL,
        TASK_WORKFLOW,
        TRIGGER_WORKFLOW,
        delivery_workflow_id,
        search_attributes,
        wait_queue,
    )
    from schema.triggers import Delivery, delivery_digest

# Delivery ids remembered per task (as 32-character digests, about 0.4 MB carried across
# continue-as-new). Older repeats are caught by Temporal's workflow-id uniqueness instead.
DEDUP_WINDOW = 10_000
# Continue as new after this many deliveries even if Temporal does not suggest it yet.
ROLL_AFTER = 1_000
# What the carried queue's payloads may weigh (as JSON) at a roll-over.
CARRY_LIMIT = 1_000_000
# Runs from before it let every running child end before continuing as new.
ROLL_WITHOUT_DRAIN = "roll-without-drain"
# Runs from before it ended at once when cancelled, leaving their runs going.
CANCEL_ENDS_RUNS = "cancel-ends-runs"
WAIT_LIMIT = timedelta(days=7)
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
WAIT_HEARTBEAT = timedelta(seconds=30)


M = TypeVar("M", bound="BaseModel")


def decode_stored(raw: RawValue, model: type[M]) -> M:
    """A payload read as stored (``STORED``): checks added since it was written do not make
    it unreadable."""
    if raw.payload.metadata.get("encoding") == b"json/plain":
        return model.model_validate_json(raw.payload.data, context=STORED)
    value = workflow.payload_converter().from_payload(raw.payload, model)
    assert isinstance(value, model)
    return value


@workflow.defn(name=TRIGGER_WORKFLOW)
class TriggerWorkflow:
    """Queue, deduplicate and run a trigger task's deliveries, ``concurrency`` at a time."""

    @workflow.init
    def __init__(self, raw: RawValue) -> None:
        start = decode_stored(raw, TriggerInput)
        self._start = start
        self._task: TaskSpec = start.task
        self._paused = start.paused
        self._queue: deque[Delivery] = deque(start.queue)
        self._seen_order: deque[str] = deque(start.seen[-DEDUP_WINDOW:])
        self._seen: set[str] = set(self._seen_order)
        self._running = 0
        self._started = 0
        self._starting = 0
        self._children: set[asyncio.Task[None]] = set()
        # The runs going now, by workflow id (their run ids), carried at a roll-over.
        self._runs: dict[str, str | None] = {ref.workflow_id: ref.run_id for ref in start.running}
        self._queued_bytes = sum(_weight(delivery) for delivery in self._queue)
        # Set once the workflow was cancelled (its task deleted): deliveries are dropped.
        self._dropped: list[str] | None = None

    @workflow.signal(name=DELIVER_SIGNAL)
    def deliver(self, raw: RawValue) -> None:
        delivery = decode_stored(raw, Delivery)
        if self._dropped is not None:
            workflow.logger.info("delivery %s dropped: the task was deleted", delivery.delivery_id)
            self._dropped.append(delivery.delivery_id)
            return
        digest = delivery_digest(delivery.delivery_id)
        if digest in self._seen:
            workflow.logger.info("delivery %s seen before: dropped", delivery.delivery_id)
            return
        self._seen.add(digest)
        self._seen_order.append(digest)
        while len(self._seen_order) > DEDUP_WINDOW:
            self._seen.discard(self._seen_order.popleft())
        self._queue.append(delivery)
        self._queued_bytes += _weight(delivery)

    @workflow.signal(name=CONFIGURE_SIGNAL)
    def configure(self, raw: RawValue) -> None:
        config = decode_stored(raw, TriggerConfig)
        self._task, self._paused = config.task, config.paused

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {
            "queued": len(self._queue),
            "running": self._running,
            "seen": len(self._seen_order),
            "paused": self._paused,
            "concurrency": self._task.concurrency,
            "spec_hash": self._task.spec_hash(),
        }

    @workflow.run
    async def run(self, raw: RawValue) -> dict[str, Any] | None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            if not workflow.patched(CANCEL_ENDS_RUNS):
                raise  # a run from before: its runs went on
            return await self._end_cancelled()
        return None  # never reached: it serves until cancelled, or continues as new

    async def _serve(self) -> None:
        for workflow_id, run_id in list(self._runs.items()):  # carried from the run before
            self._running += 1
            self._spawn(self._await_carried(RunRef(workflow_id=workflow_id, run_id=run_id)))
        while True:
            await workflow.wait_condition(lambda: self._can_start() or self._should_roll())
            if self._should_roll():
                if workflow.patched(ROLL_WITHOUT_DRAIN):
                    await workflow.wait_condition(
                        lambda: self._starting == 0 and workflow.all_handlers_finished()
                    )
                else:  # a run from before: its children ended first
                    await workflow.wait_condition(
                        lambda: self._running == 0 and workflow.all_handlers_finished()
                    )
                workflow.continue_as_new(
                    TriggerInput(
                        task_id=self._start.task_id,
                        user_id=self._start.user_id,
                        task=self._task,
                        paused=self._paused,
                        queue=list(self._queue),
                        seen=list(self._seen_order),
                        running=[
                            RunRef(workflow_id=workflow_id, run_id=run_id)
                            for workflow_id, run_id in self._runs.items()
                        ],
                    )
                )
            while self._can_start():
                self._running += 1
                self._started += 1
                delivery = self._queue.popleft()
                self._queued_bytes -= _weight(delivery)
                # Started side by side: several children start in one workflow task.
                self._spawn(self._run(delivery))

    async def _end_cancelled(self) -> dict[str, Any]:
        """Cancelled (the task was deleted): drop the deliveries that wait, cancel every
        run going (a chain waiting for its resume URL included), and end with what was
        dropped and cancelled, which stays in Temporal's history."""
        self._dropped = [delivery.delivery_id for delivery in self._queue]
        self._queue.clear()
        for delivery_id in self._dropped:
            workflow.logger.info("delivery %s dropped: the task was deleted", delivery_id)
        # The runs going now, and those being started (cancelled once they have their id);
        # a run that ends meanwhile leaves ``_runs``, and is still named here.
        going = dict(self._runs)
        await workflow.wait_condition(lambda: self._starting == 0)
        going.update(self._runs)
        for workflow_id, run_id in going.items():
            handle = workflow.get_external_workflow_handle(workflow_id, run_id=run_id)
            try:
                await handle.cancel()
            except FailureError as error:  # it ended meanwhile
                workflow.logger.info("run %s not cancelled: %s", workflow_id, error)
        return {
            "ended": "the task was deleted",
            "dropped_deliveries": self._dropped,
            "cancelled_runs": list(going),
        }

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        child = asyncio.create_task(work)
        self._children.add(child)
        child.add_done_callback(self._children.discard)

    async def _await_carried(self, ref: RunRef) -> None:
        """Count a run the previous run started until it ends."""
        try:
            await workflow.execute_activity(
                "wait_for_runs",
                [ref],
                task_queue=wait_queue(workflow.info().task_queue),
                start_to_close_timeout=WAIT_LIMIT,
                heartbeat_timeout=WAIT_HEARTBEAT,
                retry_policy=WAIT_RETRY,
            )
        finally:
            self._running -= 1
            self._runs.pop(ref.workflow_id, None)

    def _can_start(self) -> bool:
        return bool(self._queue) and not self._paused and self._running < self._task.concurrency

    def _should_roll(self) -> bool:
        due = self._started >= ROLL_AFTER or workflow.info().is_continue_as_new_suggested()
        return due and self._queued_bytes <= CARRY_LIMIT

    async def _run(self, delivery: Delivery) -> None:
        start = self._start
        run_input = TaskRunInput(
            task_id=start.task_id,
            user_id=start.user_id,
            task=self._task,
            trigger=delivery.kind,
            payload=delivery.payload,
            scheduled_at=delivery.received_at,
            delivery_id=delivery.delivery_id,
            depth=delivery.depth,
        )
        workflow_id = delivery_workflow_id(
            start.task_id, delivery.kind, delivery_digest(delivery.delivery_id)
        )
        self._starting += 1
        try:
            try:
                child = await workflow.start_child_workflow(
                    TASK_WORKFLOW,
                    run_input,
                    id=workflow_id,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=search_attributes(start.task_id, start.user_id),
                    memo={"task_id": str(start.task_id), "user_id": str(start.user_id)},
                )
            finally:
                self._starting -= 1
            self._runs[workflow_id] = child.first_execution_run_id
            await child
        except WorkflowAlreadyStartedError:
            workflow.logger.info("delivery %s ran before: not run again", delivery.delivery_id)
        except Exception as error:  # the run records its own failure
            if not isinstance(error, ChildWorkflowError):  # it did not even start
                workflow.logger.warning("delivery %s not started: %s", delivery.delivery_id, error)
        finally:
            self._running -= 1
            self._runs.pop(workflow_id, None)


def _weight(delivery: Delivery) -> int:
    """About what a queued delivery weighs carried across continue-as-new."""
    return len(json.dumps(delivery.payload, default=str)) + len(delivery.delivery_id) + 200
