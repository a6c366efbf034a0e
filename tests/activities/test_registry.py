"""The routing table in schema/ says which activity and queue serve each action type; the
worker binds handlers to it and refuses to start while one is missing. The API and the
workflows read the table, never the action implementations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from activities.registry import HANDLERS, MissingHandler, check_handlers
from schema.actions import ACTION_ROUTES, Action

PROJECT = Path(__file__).resolve().parents[2]


def test_every_action_type_has_a_route_and_a_handler() -> None:
    union = get_args(get_args(Action)[0])
    types = {get_args(model.model_fields["type"].annotation)[0] for model in union}
    assert types == set(ACTION_ROUTES) == set(HANDLERS)
    check_handlers()
    assert ACTION_ROUTES["run_code"].queue == "code"
    assert {route.queue for name, route in ACTION_ROUTES.items() if name != "run_code"} == {"main"}


def test_a_routed_type_without_a_handler_stops_the_worker() -> None:
    handlers = dict(HANDLERS)
    del handlers["webhook"]
    with pytest.raises(MissingHandler, match="webhook"):
        check_handlers(handlers)


def test_the_api_and_the_workflows_do_not_load_the_actions() -> None:
    code = (
        "import json, sys\n"
        "import api.main, workflows.task, workflows.history, workflows.trigger\n"
        "import workflows.chain, workflows.email_poll\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('activities'))))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout
    )
    assert set(loaded) <= {"activities", "activities.history", "activities.chain"}, loaded
