"""Pure helpers that turn a task's retry spec into Temporal's policy and a failure into a record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
)

from schema.executions import ExecutionError, ExecutionStatus, LogEntry
from schema.tasks import RetrySpec

# The type of the failure a cancelled action reports, with its log in its details.
CANCELLED = "Cancelled"


def retry_policy_for(retry: RetrySpec) -> RetryPolicy:
    """Temporal's retry policy for an action; jitter is added by the activity itself."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=retry.initial_interval_seconds),
        backoff_coefficient=retry.backoff_coefficient,
        maximum_interval=timedelta(seconds=retry.max_interval_seconds),
        maximum_attempts=retry.max_attempts,
        non_retryable_error_types=list(retry.non_retryable_errors) or None,
    )


@dataclass
class Failure:
    """A failed action as the execution record shows it."""

    status: ExecutionStatus
    error: ExecutionError
    attempts: int
    logs: list[LogEntry] = field(default_factory=list)


def failure_from(error: BaseException, retry: RetrySpec) -> Failure:
    """Classify what ``execute_activity`` raised: status, error type, attempts and logs."""
    cause = error.cause if isinstance(error, ActivityError) else error
    details = _details_of(cause)
    attempts = int(details.get("attempt", 1))
    if (
        isinstance(error, ActivityError)
        and error.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
    ):
        attempts = retry.max_attempts
    logs = [LogEntry.model_validate(entry) for entry in details.get("logs", [])]
    cancelled = isinstance(cause, ApplicationError) and cause.type == CANCELLED
    if cancelled or isinstance(cause, CancelledError | asyncio.CancelledError):
        return Failure(
            "cancelled", ExecutionError(type="Cancelled", message="cancelled"), attempts, logs
        )
    if isinstance(cause, TimeoutError):
        kind = cause.type.name.lower() if cause.type else "unknown"
        message = f"attempt exceeded its {kind} timeout"
        return Failure(
            "timed_out", ExecutionError(type="ActivityTimeout", message=message), attempts, logs
        )
    if isinstance(cause, ApplicationError):
        error_type = cause.type or "ApplicationError"
        status: ExecutionStatus = "timed_out" if error_type.endswith("Timeout") else "failed"
        return Failure(
            status, ExecutionError(type=error_type, message=cause.message), attempts, logs
        )
    message = str(cause) if cause is not None else str(error)
    return Failure(
        "failed", ExecutionError(type=type(cause).__name__, message=message), attempts, logs
    )


def _details_of(cause: BaseException | None) -> dict[str, Any]:
    if isinstance(cause, ApplicationError | CancelledError):
        details = cause.details
    elif isinstance(cause, TimeoutError):
        details = cause.last_heartbeat_details
    else:
        return {}
    return details[0] if details and isinstance(details[0], dict) else {}
