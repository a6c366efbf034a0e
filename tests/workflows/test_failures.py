"""The pure mapping from Temporal failures to execution records and from retry specs to policy."""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from schema.tasks import RetrySpec
from workflows.failures import failure_from, retry_policy_for


def _activity_error(cause: BaseException, state: RetryState) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="test",
        activity_type="run_webhook",
        activity_id="1",
        retry_state=state,
    )
    error.__cause__ = cause
    return error


def test_retry_policy_mirrors_the_spec() -> None:
    spec = RetrySpec(
        max_attempts=4,
        initial_interval_seconds=2,
        backoff_coefficient=3,
        max_interval_seconds=60,
        non_retryable_errors=["InvalidConfig"],
    )
    policy = retry_policy_for(spec)
    assert policy.maximum_attempts == 4
    assert policy.initial_interval == timedelta(seconds=2)
    assert policy.backoff_coefficient == 3
    assert policy.maximum_interval == timedelta(seconds=60)
    assert policy.non_retryable_error_types == ["InvalidConfig"]


def test_application_errors_keep_type_attempt_and_logs() -> None:
    logs = [{"at": "2026-01-01T00:00:00+00:00", "level": "error", "message": "boom"}]
    cause = ApplicationError(
        "HTTP 404", {"attempt": 1, "logs": logs}, type="HttpStatusError", non_retryable=True
    )
    failure = failure_from(_activity_error(cause, RetryState.NON_RETRYABLE_FAILURE), RetrySpec())
    assert failure.status == "failed" and failure.attempts == 1
    assert (failure.error.type, failure.error.message) == ("HttpStatusError", "HTTP 404")
    assert [entry.message for entry in failure.logs] == ["boom"]


def test_exhausted_attempts_and_timeouts() -> None:
    retry = RetrySpec(max_attempts=5)
    exhausted = ApplicationError("HTTP 500", {"attempt": 5}, type="HttpStatusError")
    failure = failure_from(_activity_error(exhausted, RetryState.MAXIMUM_ATTEMPTS_REACHED), retry)
    assert failure.attempts == 5 and failure.status == "failed"

    timeout = TimeoutError("timeout", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    timed_out = failure_from(_activity_error(timeout, RetryState.MAXIMUM_ATTEMPTS_REACHED), retry)
    assert timed_out.status == "timed_out" and timed_out.error.type == "ActivityTimeout"
    assert timed_out.attempts == 5 and "start_to_close" in timed_out.error.message

    http_timeout = ApplicationError("slow", {"attempt": 2}, type="HttpTimeout")
    classified = failure_from(
        _activity_error(http_timeout, RetryState.NON_RETRYABLE_FAILURE), retry
    )
    assert classified.status == "timed_out" and classified.attempts == 2
