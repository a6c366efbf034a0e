"""Runs in flight survive code changes: recorded histories replay against today's workflows.

A workflow change that would break a run already in flight (a command added, removed or
reordered without ``workflow.patched``) makes this fail. The histories in ``histories/``
were recorded from the test suite with the code of their day (tests/fixtures/histories.py
says how to record more); the current session's own closed runs are replayed too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import ApiUser
from tests.fixtures import histories
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring
from worker import WORKFLOWS

SESSION_SAMPLE = 300


def _replayer() -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)


async def _each(items: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for item in items:
        yield item


async def test_recorded_histories_replay() -> None:
    recorded = histories.recorded()
    shapes = {histories.shape_of(history).split(":", 1)[0] for history in recorded}
    expected = {
        "TaskWorkflow",
        "RetentionWorkflow",
        "TriggerWorkflow",
        "ChainWorkflow",
        "NotifyWorkflow",
    }
    assert expected | {"ChainStepWorkflow", "EmailPollWorkflow"} <= shapes, "missing"
    results = await _replayer().replay_workflows(_each(recorded), raise_on_replay_failure=False)
    failures = {run_id: repr(error) for run_id, error in results.replay_failures.items()}
    assert failures == {}


def _returned(history: WorkflowHistory) -> Any:
    """What a completed run returned (None for any other ending)."""
    last = history.events[-1]
    if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        return None
    [payload] = last.workflow_execution_completed_event_attributes.result.payloads
    return json.loads(payload.data)


def _returning(history: WorkflowHistory, value: Any) -> WorkflowHistory:
    """A copy of ``history`` whose completion returned ``value``."""
    copy = WorkflowHistory.from_json(history.workflow_id, history.to_json())
    [payload] = copy.events[-1].workflow_execution_completed_event_attributes.result.payloads
    payload.data = json.dumps(value).encode()
    return copy


async def test_what_a_run_returns_is_not_replayed() -> None:
    """TaskWorkflow returned the action's result until it returned only ``{execution_id,
    status}``. A completion's payload is not compared on replay: runs that returned the old
    value replay against today's code, and so do runs whose return value is anything else."""
    completed = [
        history
        for history in histories.recorded()
        if histories.shape_of(history).startswith("TaskWorkflow:") and _returned(history)
    ]
    old = [history for history in completed if "result" in _returned(history)]
    assert old, "no recorded run returned the action's result"
    results = await _replayer().replay_workflows(_each(old), raise_on_replay_failure=False)
    assert results.replay_failures == {}
    altered = [_returning(history, {"anything": ["else"]}) for history in completed]
    results = await _replayer().replay_workflows(_each(altered), raise_on_replay_failure=False)
    assert results.replay_failures == {}


async def test_this_sessions_histories_replay(
    temporal: Client, user: ApiUser, target: HttpTarget
) -> None:
    # At least one run of today's code, whichever tests ran before.
    task = await user.create_task(
        recurring(f"{target.url}/ok/{uuid.uuid4().hex}", interval_seconds=86400, retry=fast_retry())
    )
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    returned = await temporal.get_workflow_handle(started["workflow_id"]).result()
    # The run returns where to find its record, not the action's result (it is in there).
    assert set(returned) == {"execution_id", "status"} and returned["status"] == "succeeded"
    session = [
        history
        async for history in histories.closed_histories(
            temporal, histories.RECORDED_QUERY, limit=SESSION_SAMPLE
        )
    ]
    results = await _replayer().replay_workflows(_each(session), raise_on_replay_failure=False)
    failures = {run_id: repr(error) for run_id, error in results.replay_failures.items()}
    assert failures == {}
