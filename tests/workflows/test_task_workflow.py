"""TaskWorkflow through the API on the real dev server: retries, classification, timeouts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities._results import MAX_RESULT_BYTES, size_of
from activities.history import HistoryActivities
from tests.conftest import ApiUser, eventually
from tests.fixtures.histories import events_holding
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import fast_retry, recurring


async def _run_once(user: ApiUser, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create a paused-by-interval task, run it now, and wait for its final record."""
    task = await user.create_task({**body, "schedule": {"interval_seconds": 86400}})
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()

    async def final() -> dict[str, Any] | None:
        runs = await user.executions(task["id"], workflow_id=started["workflow_id"])
        return runs[0] if runs and runs[0]["status"] != "running" else None

    return task, await eventually(final, timeout=45)


async def test_retries_until_success(user: ApiUser, target: HttpTarget, temporal: Client) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/seq/{key}?codes=500,500,200", retry=fast_retry(3))
    task, run = await _run_once(user, body)
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 3
    assert target.hits(key) == 3
    messages = [entry["message"] for entry in run["logs"]]
    assert sum("HttpStatusError: unexpected HTTP 500" in m for m in messages) == 2
    assert messages[-1] == "succeeded"
    description = await temporal.get_workflow_handle(
        run["workflow_id"], run_id=run["run_id"]
    ).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    refreshed = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert refreshed["run_count"] == 1 and refreshed["failure_count"] == 0


async def test_jittered_retries_still_succeed(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/seq/{key}?codes=503,200", retry=fast_retry(3, jitter=True))
    _, run = await _run_once(user, body)
    assert run["status"] == "succeeded" and run["attempts"] == 2
    assert any(entry["message"].startswith("retrying in ") for entry in run["logs"])


async def test_client_error_is_not_retried(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/seq/{key}?codes=404", retry=fast_retry(5))
    task, run = await _run_once(user, body)
    assert run["status"] == "failed"
    assert run["attempts"] == 1
    assert target.hits(key) == 1
    assert run["error"]["type"] == "HttpStatusError"
    assert "404" in run["error"]["message"]
    handle = temporal.get_workflow_handle(run["workflow_id"], run_id=run["run_id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    refreshed = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert refreshed["failure_count"] == 1 and refreshed["last_status"] == "failed"


async def test_server_errors_exhaust_attempts(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/seq/{key}?codes=500", retry=fast_retry(2))
    _, run = await _run_once(user, body)
    assert run["status"] == "failed" and run["attempts"] == 2
    assert target.hits(key) == 2


async def test_non_retryable_errors_named_by_the_task(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    retry = {**fast_retry(4), "non_retryable_errors": ["HttpStatusError"]}
    _, run = await _run_once(user, recurring(f"{target.url}/seq/{key}?codes=500", retry=retry))
    assert run["status"] == "failed" and target.hits(key) == 1


async def test_rate_limit_honours_retry_after(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    url = f"{target.url}/seq/{key}?codes=429,200&retry_after=2"
    _, run = await _run_once(user, recurring(url, retry=fast_retry(3, jitter=True)))
    assert run["status"] == "succeeded" and run["attempts"] == 2
    assert any(entry["message"] == "retrying in 2.00s" for entry in run["logs"])


async def test_attempt_timeout_is_timed_out(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=10", retry=fast_retry(2), timeout_seconds=1)
    _, run = await _run_once(user, body)
    assert run["status"] == "timed_out"
    assert run["error"]["type"] == "ActivityTimeout"
    assert run["attempts"] == 2
    assert target.hits(key) == 2


async def test_http_timeout_is_classified(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/slow/{key}?seconds=5",
        retry=fast_retry(1),
        config={"timeout_seconds": 0.5},
    )
    _, run = await _run_once(user, body)
    assert run["status"] == "timed_out"
    assert run["error"]["type"] == "HttpTimeout"


async def test_connection_refused_is_retried(user: ApiUser) -> None:
    body = recurring("http://127.0.0.1:9/nothing", retry=fast_retry(2))
    _, run = await _run_once(user, body)
    assert run["status"] == "failed" and run["attempts"] == 2
    assert run["error"]["type"] == "HttpConnectionError"


async def test_request_shape_and_a_body_over_the_result_limit(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    body = recurring(
        f"{target.url}/ok/{key}",
        config={
            "method": "put",
            "headers": {"X-Test": "yes"},
            "query": {"a": "1"},
            "body": {"hello": "world"},
        },
    )
    _, run = await _run_once(user, body)
    assert run["status"] == "succeeded"
    sent = target.requests[key][0]
    assert sent["method"] == "PUT" and sent["query"] == {"a": "1"}
    assert sent["headers"]["x-test"] == "yes" and sent["body"] == '{"hello":"world"}'
    assert run["result"]["body"] == {"ok": True, "key": key, "hit": 1}

    # Over what the webhook reads (1 MiB) and what a result may weigh (256 KiB): the status
    # and headers stay whole, the body keeps its beginning, and the result says it was cut.
    big_key = uuid.uuid4().hex
    _, big = await _run_once(
        user, recurring(f"{target.url}/big/{big_key}?size=1500000", config={"method": "GET"})
    )
    result = big["result"]
    assert big["status"] == "succeeded" and result["status_code"] == 200
    assert result["result_truncated"] is True and result["result_bytes"] > MAX_RESULT_BYTES
    assert result["headers"]["content-length"] == "1500000"
    assert set(result["body"]) == {"x"} and 200_000 < len(result["body"]) < MAX_RESULT_BYTES
    assert size_of(result) <= MAX_RESULT_BYTES
    assert "body_truncated" not in result
    assert any("result_truncated" in entry["message"] for entry in big["logs"])
    # In Temporal, the result is the activity's result, and nowhere else: the run returns
    # {execution_id, status}, and its final record is written in-process (a local activity).
    handle = temporal.get_workflow_handle(big["workflow_id"], run_id=big["run_id"])
    assert events_holding(await handle.fetch_history(), "x" * 3000) == ["ACTIVITY_TASK_COMPLETED"]
    assert await handle.result() == {"execution_id": big["id"], "status": "succeeded"}


async def test_unexpected_status_per_expect_status(user: ApiUser, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/seq/{key}?codes=204", config={"expect_status": [200]})
    _, run = await _run_once(user, body)
    assert run["status"] == "failed" and run["attempts"] == 1
    accepted = recurring(f"{target.url}/seq/{key}x?codes=404", config={"expect_status": [404]})
    _, ok = await _run_once(user, accepted)
    assert ok["status"] == "succeeded" and ok["result"]["status_code"] == 404


async def test_cancelled_run_is_recorded_as_cancelled(
    user: ApiUser, target: HttpTarget, temporal: Client
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=20", retry=fast_retry(1))
    task = await user.create_task({**body, "schedule": {"interval_seconds": 86400}})
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    await eventually(lambda: asyncio.sleep(0, target.hits(key) == 1))
    handle = temporal.get_workflow_handle(started["workflow_id"], run_id=started["run_id"])
    await handle.cancel()

    async def final() -> dict[str, Any] | None:
        runs = await user.executions(task["id"])
        return runs[0] if runs and runs[0]["status"] != "running" else None

    run = await eventually(final)
    assert run["status"] == "cancelled" and run["error"]["type"] == "Cancelled"
    # The record is written before the run ends: the workflow closes a moment later.
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_terminated_run_is_settled_by_the_system_sweep(
    user: ApiUser, target: HttpTarget, temporal: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = uuid.uuid4().hex
    body = recurring(f"{target.url}/slow/{key}?seconds=20", retry=fast_retry(1))
    task = await user.create_task({**body, "schedule": {"interval_seconds": 86400}})
    started = (await user.post(f"/api/tasks/{task['id']}/run")).json()
    await eventually(lambda: user.executions(task["id"], status="running"))
    handle = temporal.get_workflow_handle(started["workflow_id"], run_id=started["run_id"])
    await handle.terminate("overlap policy terminate_other")
    history = HistoryActivities(sessions, temporal)
    env = ActivityEnvironment(client=temporal)
    assert await env.run(history.settle_unrecorded_executions, 3600) == 0  # too recent to touch

    await env.run(history.settle_unrecorded_executions, 0)
    [run] = await user.executions(task["id"])
    assert run["status"] == "cancelled" and run["error"]["type"] == "Terminated"
    assert run["finished_at"] is not None
    refreshed = (await user.get(f"/api/tasks/{task['id']}")).json()
    assert refreshed["run_count"] == 1 and refreshed["last_status"] == "cancelled"
    await env.run(history.settle_unrecorded_executions, 0)
    assert (await user.get(f"/api/tasks/{task['id']}")).json()["run_count"] == 1
