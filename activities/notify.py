"""Notifications after a run: an email summary and/or a JSON POST, as the task's ``notify``
asks. It runs after the final record, so it never delays or changes the run's outcome; a
notification that fails is logged on the execution (and in the worker's log), not retried
forever."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.exc import DBAPIError
from temporalio import activity

from activities._action import ActionDeps
from activities._failure import ActionFailure
from activities.send_email import build_message, deliver
from schema import crud
from schema.executions import LogEntry, NotifyInput
from schema.temporal_ids import WebUi

log = logging.getLogger("cronpilot.notify")
NOTIFY_TIMEOUT_SECONDS = 15.0
MAX_RESULT_CHARS = 2000


class NotifyActivities:
    def __init__(self, deps: ActionDeps) -> None:
        self.deps = deps

    @activity.defn
    async def notify_run(self, notice: NotifyInput) -> dict[str, Any]:
        """Send every notification the task asks for; each failure is logged on the
        execution. Returns what was sent and what failed. Nothing is sent about a run of a
        task deleted since (its runs were cancelled by the delete)."""
        if await self._task_deleted(notice):
            log.info("run %s: its task was deleted; no notification", notice.workflow_id)
            return {"sent": [], "failed": [], "skipped": "the task was deleted"}
        summary = self._summary(notice)
        sent: list[str] = []
        failed: list[str] = []
        if notice.notify.email:
            try:
                await self._email(notice, summary)
                sent.append("email")
            except Exception as error:  # any failure: logged, never the run's
                failed.append(f"email to {', '.join(notice.notify.email)}: {_reason(error)}")
        if notice.notify.webhook_url:
            try:
                await self._post(notice.notify.webhook_url, summary)
                sent.append("webhook")
            except Exception as error:
                failed.append(f"POST to {notice.notify.webhook_url}: {_reason(error)}")
        lines = (
            [LogEntry(at=datetime.now(UTC), message=f"notified by {', '.join(sent)}")]
            if (sent)
            else []
        )
        lines += [
            LogEntry(at=datetime.now(UTC), level="warning", message=f"notification failed: {why}")
            for why in failed
        ]
        for line in failed:
            log.warning("run %s: notification failed: %s", notice.workflow_id, line)
        if lines:
            try:  # the notifications are out: a retry must not send them again
                async with self.deps.sessions.begin() as session:
                    for entry in lines:
                        await crud.append_log(
                            session,
                            workflow_id=notice.workflow_id,
                            run_id=notice.run_id,
                            entry=entry,
                        )
            except Exception as error:
                log.warning("run %s: notification log not written: %r", notice.workflow_id, error)
        return {"sent": sent, "failed": failed}

    async def _task_deleted(self, notice: NotifyInput) -> bool:
        """Whether the run's task is gone (not known while the database is down: then the
        notification goes out, as it must not wait for the database)."""
        try:
            async with self.deps.sessions() as session:
                return not await crud.task_exists(session, task_id=notice.task_id)
        except (DBAPIError, OSError) as error:
            log.warning("run %s: task not looked up (%r); notifying", notice.workflow_id, error)
            return False

    def _summary(self, notice: NotifyInput) -> dict[str, Any]:
        settings = self.deps.settings
        ui = WebUi(settings.temporal_ui_url, settings.temporal_namespace)
        return {
            "task_id": str(notice.task_id),
            "task_name": notice.task_name,
            "execution_id": str(notice.execution_id),
            "status": notice.status,
            "trigger": notice.trigger,
            "started_at": notice.started_at.isoformat(),
            "finished_at": notice.finished_at.isoformat(),
            "duration_ms": int((notice.finished_at - notice.started_at).total_seconds() * 1000),
            "error": notice.error.model_dump() if notice.error else None,
            "execution_url": f"{settings.public_url.rstrip('/')}/api/executions/"
            f"{notice.execution_id}",
            "temporal_url": ui.workflow(notice.workflow_id, notice.run_id),
        }

    async def _email(self, notice: NotifyInput, summary: dict[str, Any]) -> None:
        error = notice.error
        lines = [
            f"Task: {notice.task_name}",
            f"Status: {notice.status}",
            f"Trigger: {notice.trigger}",
            f"Started: {summary['started_at']}",
            f"Finished: {summary['finished_at']} ({summary['duration_ms']} ms)",
        ]
        if error is not None:
            lines.append(f"Error: {error.type}: {error.message}"[:MAX_RESULT_CHARS])
        lines += [
            "",
            f"Execution: {summary['execution_url']}",
            f"Temporal: {summary['temporal_url']}",
        ]
        subject = f"[Cronpilot] {notice.task_name}: {notice.status}".replace("\r", " ").replace(
            "\n", " "
        )
        message = build_message(
            sender=self.deps.settings.smtp_from,
            to=notice.notify.email,
            subject=subject[:200],
            text="\n".join(lines) + "\n",
        )
        await deliver(self.deps.settings, message)

    async def _post(self, url: str, summary: dict[str, Any]) -> None:
        response = await self.deps.http.post(url, json=summary, timeout=NOTIFY_TIMEOUT_SECONDS)
        if response.status_code >= 300:
            raise ActionFailure(
                "HttpStatusError", f"answered {response.status_code}", retryable=False
            )


def _reason(error: Exception) -> str:
    if isinstance(error, ActionFailure):
        return f"{error.type}: {error.message}"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}: {error}" or type(error).__name__
    return f"{type(error).__name__}: {error}"
