"""The handlers of the action types: the worker binds them to the routing table of
``schema.actions`` and refuses to start while a routed type has no handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from schema.actions import ACTION_ROUTES, ActionQueue

HANDLERS: dict[str, Handler] = {
    "webhook": webhook.send,
    "ai_prompt": ai_prompt.prompt,
    "send_email": send_email.send,
    "web_scrape": web_scrape.scrape,
    "generate_report": generate_report.generate,
    "google_workspace": google_workspace.call,
    "file_operation": file_operation.operate,
    "run_code": run_code.execute,
}


class MissingHandler(RuntimeError):
    """The routing table and the handlers disagree: the worker must not start."""


def check_handlers(handlers: dict[str, Handler] = HANDLERS) -> None:
    """Every routed action type has a handler, and every handler a route."""
    unhandled = sorted(ACTION_ROUTES.keys() - handlers.keys())
    unrouted = sorted(handlers.keys() - ACTION_ROUTES.keys())
    if unhandled or unrouted:
        raise MissingHandler(
            f"action types without a handler: {unhandled}; handlers without a route: {unrouted}"
        )


def action_activities(deps: ActionDeps, queue: ActionQueue) -> list[Callable[..., Any]]:
    """The activities a worker on that queue must register."""
    check_handlers()
    return [
        action_activity(route.activity, HANDLERS[action_type], deps)
        for action_type, route in ACTION_ROUTES.items()
        if route.queue == queue
    ]
