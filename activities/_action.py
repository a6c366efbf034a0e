"""What every action activity shares: its log, attempt bookkeeping and classified failures.

Logs survive retries: each attempt heartbeats its log, and the next attempt starts from
the previous attempt's heartbeat details, so the final record shows every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, NoReturn

from temporalio import activity
from temporalio.exceptions import ApplicationError

from schema.executions import ActionInput, ActionOutcome, LogEntry

MAX_LOG_ENTRIES = 200
MAX_RETRY_AFTER = timedelta(hours=1)
# Heartbeats carry the log to the next attempt, let Temporal notice a dead worker within the
# workflow's heartbeat timeout, and are how a cancellation reaches a running action.
HEARTBEAT_EVERY_SECONDS = 5.0


class ActionRun:
    """One attempt of an action: collects log lines and ends in an outcome or a failure.

    Use it as ``async with ActionRun(action_input) as run:`` so it heartbeats meanwhile.
    """

    def __init__(self, action_input: ActionInput) -> None:
        self.input = action_input
        info = activity.info()
        self.attempt = info.attempt
        self.logs: list[LogEntry] = []
        details = info.heartbeat_details
        if details and isinstance(details[0], dict):
            self.logs = [LogEntry.model_validate(entry) for entry in details[0].get("logs", [])]
        self.log(f"attempt {self.attempt} of {action_input.retry.max_attempts} started")
        self._beating: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ActionRun:
        self._beating = asyncio.create_task(self._beat())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
            activity.heartbeat(self._details())

    def log(
        self, message: str, level: Literal["debug", "info", "warning", "error"] = "info"
    ) -> None:
        self.logs.append(LogEntry(at=datetime.now(UTC), level=level, message=message))
        del self.logs[:-MAX_LOG_ENTRIES]
        activity.heartbeat(self._details())

    def outcome(self, result: Any) -> ActionOutcome:
        self.log("succeeded")
        return ActionOutcome(result=result, logs=self.logs, attempt=self.attempt)

    def fail(
        self,
        error_type: str,
        message: str,
        *,
        retryable: bool,
        retry_after: timedelta | None = None,
    ) -> NoReturn:
        """Raise a classified failure; a retryable one gets a jittered or server-given delay."""
        self.log(f"{error_type}: {message}", level="error")
        delay = None
        if retryable:
            delay = min(retry_after, MAX_RETRY_AFTER) if retry_after else self._jittered_delay()
            if delay is not None and self.attempt < self.input.retry.max_attempts:
                self.log(f"retrying in {delay.total_seconds():.2f}s", level="warning")
        raise ApplicationError(
            message,
            self._details(),
            type=error_type,
            non_retryable=not retryable,
            next_retry_delay=delay,
        )

    def _jittered_delay(self) -> timedelta | None:
        retry = self.input.retry
        if not retry.jitter:
            return None
        ceiling = min(
            retry.max_interval_seconds,
            retry.initial_interval_seconds * retry.backoff_coefficient ** (self.attempt - 1),
        )
        # Full jitter: anywhere between nothing and the exponential ceiling.
        return timedelta(seconds=max(0.001, random.uniform(0, ceiling)))

    def _details(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "logs": [entry.model_dump(mode="json") for entry in self.logs],
        }
