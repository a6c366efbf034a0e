"""The action runtime: what every action activity shares. Rendering its config (and
validating it again once rendered), its log, heartbeats, attempt bookkeeping, the size
limit of its result, and the one place where failures are logged, redacted and turned into
Temporal's ``ApplicationError``.

Helpers fail a run by raising ``ActionFailure`` (``activities/_failure.py``); anything else
they raise is unexpected: its traceback is logged once (redacted) and the attempt fails with
the exception's class name as its type, retryably. The worker's log shows one line per
failed attempt (``ONE_LINE_FAILURES``), not the SDK's traceback of our own failures.

Logs survive retries: each attempt heartbeats its log, and the next attempt starts from
the previous attempt's heartbeat details, so the final record shows every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import traceback
from collections.abc import Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, NoReturn

import httpx
from jinja2.exceptions import SecurityError, TemplateError
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._failure import EXCERPT_SCAN_CHARS, ActionFailure, excerpt
from activities._http import OutboundClient, redirect_log
from activities._network import BlockedAddress, GuardedTransport
from activities._redaction import Redactor
from activities._results import MAX_RESULT_BYTES, bounded
from activities._templates import (
    MissingSecret,
    SecretValues,
    TemplateTooLarge,
    referenced_names,
    render,
)
from schema import crud
from schema.actions import RENDERED, STORED
from schema.crypto import SecretBox
from schema.executions import ActionInput, ActionOutcome, LogEntry
from schema.settings import Settings

MAX_LOG_ENTRIES = 200
CANCELLED = "Cancelled"  # what workflows.failures reads as a cancelled action
MAX_RETRY_AFTER = timedelta(hours=1)
# Heartbeats carry the log to the next attempt, let Temporal notice a dead worker within the
# workflow's heartbeat timeout, and are how a cancellation reaches a running action.
HEARTBEAT_EVERY_SECONDS = 5.0
# A failed attempt's line in the worker's log quotes at most this much of its message.
WORKER_LOG_MESSAGE_CHARS = 500
# The SDK logs each failed activity attempt here ("Completing activity as failed").
ACTIVITY_LOGGER = "temporalio.activity"
LogLevel = Literal["debug", "info", "warning", "error"]
# Redaction decodes every encoded character (a %, & or \ starts each) at about a microsecond
# and a hundred bytes apiece: a result over MAX_RESULT_BYTES with more of them than this, or
# this long, is cut to the limit first and redacted after (``redacted_result``).
DECODE_BUDGET = 64 * 1024
LONG_RESULT_CHARS = 16 * 1024 * 1024


class ActionError(ApplicationError):
    """The ``ApplicationError`` of a classified action failure, raised by the runtime only:
    Temporal records it like any other, and the worker logs it in one line."""


class OneLineFailures(logging.Filter):
    """On the SDK's activity logger: an ``ActionError`` (an expected failure) is logged as
    one line without a traceback; any other failure keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ActionError):
            info = getattr(record, "temporal_activity", None) or {}
            message = " ".join(error.message.split())
            if len(message) > WORKER_LOG_MESSAGE_CHARS:
                message = message[: WORKER_LOG_MESSAGE_CHARS - 1] + "…"
            record.msg = "%s attempt %s of %s failed (%s): %s: %s"
            record.args = (
                info.get("activity_type", "action"),
                info.get("attempt", "?"),
                info.get("workflow_id", "?"),
                "not retryable" if error.non_retryable else "retryable",
                error.type,
                message,
            )
            record.exc_info = None
            record.exc_text = None
        return True


ONE_LINE_FAILURES = OneLineFailures()


@dataclass
class ActionDeps:
    """What actions may use: settings, the database (secrets, history) and HTTP."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    _http: httpx.AsyncClient | None = field(default=None, init=False)

    @property
    def http(self) -> httpx.AsyncClient:
        """One pooled client per worker, behind the outbound network guard."""
        if self._http is None or self._http.is_closed:
            self._http = OutboundClient(
                transport=GuardedTransport(
                    allow_private=bool(self.settings.allow_private_networks),
                    allowed=self.settings.allowed_network_list,
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                ),
                follow_redirects=True,
                headers={"User-Agent": "Cronpilot/0.1"},
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class ActionRun:
    """One attempt of an action: collects log lines and ends in an outcome or a failure."""

    def __init__(self, action_input: ActionInput, deps: ActionDeps) -> None:
        self.input = action_input
        self.deps = deps
        info = activity.info()
        self.attempt = info.attempt
        self.secrets: list[str] = []
        self._redactor: Redactor | None = None
        self.logs: list[LogEntry] = []
        self._loaded_secrets: SecretValues | None = None
        self._ended = False
        details = info.heartbeat_details
        previous = details[0] if details and isinstance(details[0], dict) else {}
        self.logs = [LogEntry.model_validate(entry) for entry in previous.get("logs", [])]
        if self.attempt > 1 and not previous.get("ended"):
            # The previous attempt never reported its end: its worker died, or it hung.
            lost = previous.get("attempt", self.attempt - 1)
            self.log(
                f"attempt {lost} ended without a result (its worker stopped, or it went "
                "silent past its heartbeat timeout)",
                "warning",
            )
        self.log(f"attempt {self.attempt} of {action_input.retry.max_attempts} started")
        self._beating: asyncio.Task[None] | None = None
        self._redirects: Token[Callable[[str], None] | None] | None = None

    async def __aenter__(self) -> ActionRun:
        self._beating = asyncio.create_task(self._beat())
        # What the shared HTTP client does to a redirect is logged on this attempt.
        self._redirects = redirect_log.set(functools.partial(self.log, level="warning"))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._redirects is not None:
            redirect_log.reset(self._redirects)
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        # The attempt's secrets end with it. This object may not: a context copied during
        # the attempt (a timer's, kept by the event loop until it is due, an hour maybe)
        # holds the redirect log, and so this object.
        self.secrets, self._loaded_secrets, self._redactor = [], None, None

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
            activity.heartbeat(self._details())

    async def config(self) -> BaseModel:
        """The action's config with its templates rendered, validated again (every check of
        the config applies to rendered values too)."""
        config = self.input.action.config
        raw = config.model_dump(mode="json")
        context = self._template_context()
        try:
            names = referenced_names(raw)
        except TemplateError as error:  # a syntax error: as final as one met rendering
            message = f"{type(error).__name__}: {error}"
            raise ActionFailure("TemplateError", message, retryable=False) from None
        if "secrets" in names:
            context["secrets"] = await self._secrets()
        try:
            # In a thread: a template may take a moment (within its limits); the worker's
            # event loop, and every other action's heartbeats, go on meanwhile.
            rendered = await asyncio.to_thread(render, raw, context)
        except MissingSecret as error:
            raise ActionFailure("MissingSecret", str(error), retryable=False) from None
        except SecurityError as error:
            raise ActionFailure("TemplateSecurityError", str(error), retryable=False) from None
        except TemplateTooLarge as error:
            # Over a size or time limit: the config cannot be rendered into something usable.
            message = f"rendering templates: {error}"
            raise ActionFailure("InvalidConfig", message, retryable=False) from None
        except Exception as error:  # a TemplateError, or what an expression raised (1/0)
            message = f"{type(error).__name__}: {error}"
            raise ActionFailure("TemplateError", message, retryable=False) from None
        try:
            return type(config).model_validate(rendered, context=RENDERED)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            message = f"after rendering templates: {problems}"
            raise ActionFailure("InvalidConfig", message, retryable=False) from None

    def _template_context(self) -> dict[str, Any]:
        context = self.input.context
        return {
            "task": {"id": str(context.task_id), "name": context.task_name},
            "run": {
                "trigger": context.trigger,
                "scheduled_at": context.scheduled_at.isoformat() if context.scheduled_at else None,
                "workflow_id": self.input.workflow_id,
                "run_id": self.input.run_id,
                "attempt": self.attempt,
            },
            # Scheduled and manual runs have no payload: an empty object, so that
            # `payload.x is defined` and `payload | length` work the same for every run.
            "payload": {} if context.payload is None else context.payload,
            "steps": context.steps,
            "now": datetime.now(UTC),
        }

    def hide(self, *values: str) -> None:
        """Redact these values too (tokens, keys) from logs, results and errors, in every
        form ``activities/_redaction.py`` catches."""
        self.secrets = sorted({*self.secrets, *filter(None, values)}, key=len, reverse=True)

    def redactor(self) -> Redactor:
        """The redaction of this attempt's secrets: their forms are found once (again when
        ``hide`` adds one) and live as long as the attempt, not in a cache of the worker."""
        if self._redactor is None or self._redactor.secrets != tuple(self.secrets):
            self._redactor = Redactor(self.secrets)
        return self._redactor

    async def secret(self, name: str) -> str:
        """One of the user's secrets by name (redacted from then on); MissingSecret if absent."""
        secrets = await self._secrets()
        try:
            value: str = secrets[name]
        except MissingSecret as error:
            raise ActionFailure("MissingSecret", str(error), retryable=False) from None
        return value

    async def _secrets(self) -> SecretValues:
        """The user's secrets, read once per attempt (one query, however many templates and
        ``secret()`` calls use them), while the run's task exists; every value is redacted
        from then on."""
        if self._loaded_secrets is None:
            box = SecretBox(self.deps.settings)
            async with self.deps.sessions() as session:
                # A run whose task was deleted as it started (before the delete's
                # cancellation reached it) gets none of its owner's secrets.
                task_id, user_id = self.input.context.task_id, self.input.user_id
                if not await crud.task_exists(session, task_id=task_id, user_id=user_id):
                    raise ActionFailure(
                        "TaskDeleted",
                        "the task was deleted: a run still going gets no secrets",
                        retryable=False,
                    )
                stored = await crud.list_secrets(session, user_id=user_id)
            values = {s.name: box.decrypt(s.value_encrypted) for s in stored}
            self.hide(*values.values())
            self._loaded_secrets = SecretValues(values)
        return self._loaded_secrets

    def log(self, message: str, level: LogLevel = "info") -> None:
        entry = LogEntry(at=datetime.now(UTC), level=level, message=self.redactor().redact(message))
        self.logs.append(entry)
        del self.logs[:-MAX_LOG_ENTRIES]
        activity.heartbeat(self._details())

    async def outcome(self, result: Any) -> ActionOutcome:
        """The attempt's outcome: the result redacted and bounded in size, in a thread (a
        big result takes a moment; the worker's event loop goes on meanwhile)."""
        result = await asyncio.to_thread(redacted_result, result, self.redactor())
        if isinstance(result, dict) and result.get("result_truncated") is True:
            self.log(
                f"the result is {result.get('result_bytes')} bytes as JSON, over the limit "
                f"of {MAX_RESULT_BYTES}: it was cut (result_truncated)",
                "warning",
            )
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
        """Shortcut for ``raise ActionFailure(...)``."""
        raise ActionFailure(error_type, message, retryable=retryable, retry_after=retry_after)

    def failed(self, failure: ActionFailure) -> ActionError:
        """``failure`` redacted (then its quote cut to an excerpt) and logged, as the error
        Temporal records; a retryable one gets the delay the other side asked for, or a
        jittered one."""
        redactor = self.redactor()
        message = redactor.redact(failure.message)
        if failure.quote:
            # Redacted beyond what the excerpt reads; a longer quote is cut first, and redacted
            # as a beginning: no part of a secret crossing the cut is left.
            limit = 2 * EXCERPT_SCAN_CHARS
            quote = failure.quote
            if len(quote) > limit:
                quote = redactor.redact_beginning(quote[:limit])
            else:
                quote = redactor.redact(quote)
            quoted = excerpt(quote)
            message = f"{message}: {quoted}" if quoted else message
        self._ended = True
        self.log(f"{failure.type}: {message}", level="error")
        delay = None
        if failure.retryable:
            delay = failure.retry_after or self._jittered_delay()
            delay = min(delay, MAX_RETRY_AFTER) if delay is not None else None
            retries = failure.type not in self.input.retry.non_retryable_errors
            if delay is not None and retries and self.attempt < self.input.retry.max_attempts:
                self.log(f"retrying in {delay.total_seconds():.2f}s", level="warning")
        return ActionError(
            message,
            self._details(),
            type=failure.type,
            non_retryable=not failure.retryable,
            next_retry_delay=delay,
        )

    def cancelled(self) -> None:
        """A cancellation the user asked for ends the attempt as a `Cancelled` failure that
        carries the log (Temporal's own cancellation carries nothing); a worker shutting
        down lets the cancellation through, and the attempt is retried elsewhere."""
        details = activity.cancellation_details()
        if details is None or not details.cancel_requested or details.worker_shutdown:
            return
        self._ended = True
        self.log("cancelled", level="warning")
        raise ActionError("cancelled", self._details(), type=CANCELLED, non_retryable=True)

    def unexpected(self, error: Exception) -> ActionFailure:
        """An exception no helper classified: its traceback goes to the worker's log once
        (redacted), and the attempt fails with its class name as the type, retryably."""
        trace = "".join(traceback.format_exception(error)).rstrip()
        activity.logger.error("unexpected error in the action:\n%s", self.redactor().redact(trace))
        message = str(error) or type(error).__name__
        return ActionFailure(type(error).__name__, message, retryable=True)

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
            "ended": self._ended,
            "logs": [entry.model_dump(mode="json") for entry in self.logs],
        }


def redacted_result(result: Any, redactor: Redactor) -> Any:
    """``result`` redacted and bounded in size (``activities/_results.py``). One that is
    costly to redact whole (over the limit, and with more than DECODE_BUDGET encoded
    characters or longer than LONG_RESULT_CHARS, as JSON; a target chooses what it answers)
    is cut to the limit first and then redacted, each string the cut shortened as a
    beginning, so that no part of a secret crossing the cut is left; its ``result_bytes``
    is then its size before redaction."""
    text = json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=str)
    encoded = text.count("%") + text.count("&") + text.count("\\\\")  # a \ is \\ in JSON
    costly = len(text) > MAX_RESULT_BYTES and (
        encoded > DECODE_BUDGET or len(text) > LONG_RESULT_CHARS
    )
    del text
    if not costly:
        return bounded(redactor.redact(result))
    cut = bounded(result)
    if isinstance(result, dict):
        redacted = redactor.redact_cut(cut, result)
    else:  # bounded() wraps it: {"result_truncated", "result_bytes", "value"}
        redacted = {**cut, "value": redactor.redact_cut(cut["value"], result)}
    again = bounded(redacted)
    if again is not redacted:  # a mask longer than the secret it hides (one shorter than ***)
        again["result_bytes"] = cut["result_bytes"]
    return again


Handler = Callable[[ActionRun, Any], Awaitable[Any]]


def action_activity(name: str, handler: Handler, deps: ActionDeps) -> Callable[..., Any]:
    """The Temporal activity ``name`` that runs ``handler`` with rendering and classification."""
    logging.getLogger(ACTIVITY_LOGGER).addFilter(ONE_LINE_FAILURES)

    # The input is read here, not by the SDK: a config stored before a check was added
    # still reads, and fails as InvalidConfig when it is validated again after rendering.
    async def run_action(action_input: Any) -> ActionOutcome:
        action_input = ActionInput.model_validate(action_input, context=STORED)
        async with ActionRun(action_input, deps) as run:
            try:
                config = await run.config()
                result = await handler(run, config)
                # Within: redacting a big result takes a moment, and a cancellation may come.
                return await run.outcome(result)
            except asyncio.CancelledError:
                run.cancelled()
                raise
            except ActionFailure as failure:
                raise run.failed(failure) from None
            except BlockedAddress as error:  # the guard's refusal, wherever it surfaced
                blocked = ActionFailure("BlockedAddress", str(error), retryable=False)
                raise run.failed(blocked) from None
            except Exception as error:
                raise run.failed(run.unexpected(error)) from None

    run_action.__name__ = run_action.__qualname__ = name
    return activity.defn(name=name)(run_action)
