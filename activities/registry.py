"""The one map from ``action.type`` to the handler that runs it, its activity and queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from activities import (
    ai_prompt,
    file_operation,
    generate_report,
    google_workspace,
    run_code,
    send_email,
    web_scrape,
    webhook,
)
from activities._action import ActionDeps, Handler, action_activity

Queue = Literal["main", "code"]


@dataclass(frozen=True)
class ActionActivity:
    name: str
    handler: Handler
    queue: Queue = "main"


ACTIONS: dict[str, ActionActivity] = {
    "webhook": ActionActivity("run_webhook", webhook.send),
    "ai_prompt": ActionActivity("run_ai_prompt", ai_prompt.prompt),
    "send_email": ActionActivity("run_send_email", send_email.send),
    "web_scrape": ActionActivity("run_web_scrape", web_scrape.scrape),
    "generate_report": ActionActivity("run_generate_report", generate_report.generate),
    "google_workspace": ActionActivity("run_google_workspace", google_workspace.call),
    "file_operation": ActionActivity("run_file_operation", file_operation.operate),
    "run_code": ActionActivity("run_run_code", run_code.execute, queue="code"),
}


def action_activities(deps: ActionDeps, queue: Queue) -> list[Callable[..., Any]]:
    """The activities a worker on that queue must register."""
    return [
        action_activity(entry.name, entry.handler, deps)
        for entry in ACTIONS.values()
        if entry.queue == queue
    ]
