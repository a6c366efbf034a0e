"""The one map from ``action.type`` to the activity that runs it and its task queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from activities.webhook import run_webhook


@dataclass(frozen=True)
class ActionActivity:
    activity: Callable[..., Any]
    queue: Literal["main", "code"] = "main"

    @property
    def name(self) -> str:
        """The activity's registered name (``@activity.defn`` uses the function name)."""
        return self.activity.__name__


ACTIONS: dict[str, ActionActivity] = {
    "webhook": ActionActivity(run_webhook),
}


def action_activities(queue: Literal["main", "code"]) -> list[Callable[..., Any]]:
    """The activities a worker on that queue must register."""
    return [entry.activity for entry in ACTIONS.values() if entry.queue == queue]
