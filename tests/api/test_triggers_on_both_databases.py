"""Trigger tasks on PostgreSQL and on SQLite: a signed delivery, an event, a rerun with the
delivery's payload, and reconcile bringing back (and stopping) trigger workflows."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from api.reconcile import reconcile
from api.signatures import sign
from tests.conftest import Installation, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import webhook_action
from worker import build_workers, running


async def _executions(install: Installation, task_id: str, count: int) -> list[dict[str, Any]]:
    async def ended() -> list[dict[str, Any]] | None:
        response = await install.api.get(
            f"/api/tasks/{task_id}/executions", headers=install.headers
        )
        items = [item for item in response.json()["items"] if item["status"] != "running"]
        return items if len(items) >= count else None

    return await eventually(ended, timeout=45)


async def test_deliveries_events_reruns_and_reconcile(
    installation: Installation, target: HttpTarget
) -> None:
    install, key = installation, uuid.uuid4().hex
    workers, deps = build_workers(install.temporal, install.sessions, install.settings)
    try:
        async with running(workers):
            action = webhook_action(f"{target.url}/echo/{key}", body={"n": "{{ payload.n }}"})
            body = {"name": "hook", "type": "trigger", "trigger": {"kind": "webhook"}}
            created = await install.api.post(
                "/api/tasks", json={**body, "action": action}, headers=install.headers
            )
            assert created.status_code == 201, created.text
            task = created.json()
            made = await install.api.post(
                f"/api/tasks/{task['id']}/webhook", json={}, headers=install.headers
            )
            hook = made.json()
            payload = json.dumps({"n": 5}).encode()
            headers = {
                "X-Cronpilot-Signature": sign(hook["secret"], payload, int(time.time())),
                "Content-Type": "application/json",
            }
            delivered = await install.api.post(
                f"/api/webhooks/{hook['webhook_id']}", content=payload, headers=headers
            )
            assert delivered.status_code == 202, delivered.text
            [run] = await _executions(install, task["id"], 1)
            assert run["trigger"] == "webhook" and run["status"] == "succeeded"

            # A rerun repeats the delivery's payload, as run now (trigger manual).
            rerun = await install.api.post(
                f"/api/executions/{run['id']}/rerun", headers=install.headers
            )
            assert rerun.status_code == 202, rerun.text
            await _executions(install, task["id"], 2)
            bodies = [json.loads(hit["body"]) for hit in target.requests[key]]
            assert bodies == [{"n": "5"}, {"n": "5"}]

            # An event task of the same user.
            event_body = {
                "name": "on event",
                "type": "trigger",
                "trigger": {"kind": "event", "event": f"e.{key[:8]}"},
                "action": webhook_action(f"{target.url}/ok/{key}-event"),
            }
            event_task = (
                await install.api.post("/api/tasks", json=event_body, headers=install.headers)
            ).json()
            sent = await install.api.post(
                "/api/events", json={"name": f"e.{key[:8]}", "payload": {}}, headers=install.headers
            )
            assert sent.status_code == 202 and sent.json()["matched"] == 1
            [event_run] = await _executions(install, event_task["id"], 1)
            assert event_run["trigger"] == "event"

            # Reconcile: a trigger workflow terminated by hand comes back; one whose task is
            # gone is stopped.
            handle = install.temporal.get_workflow_handle(f"trigger-{task['id']}")
            await handle.terminate(reason="test")
            report = await reconcile(
                install.sessions, install.temporal, install.settings.task_queue
            )
            assert f"trigger-{task['id']}" in report.created
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            again = await reconcile(install.sessions, install.temporal, install.settings.task_queue)
            assert f"trigger-{task['id']}" not in again.created + again.updated
            orphan = f"trigger-{uuid.uuid4()}"
            from schema.tasks import TaskSpec, TriggerInput

            spec = TaskSpec.model_validate({**body, "action": action})
            await install.temporal.start_workflow(
                "TriggerWorkflow",
                TriggerInput(task_id=uuid.UUID(orphan[8:]), user_id=uuid.uuid4(), task=spec),
                id=orphan,
                task_queue=install.settings.task_queue,
            )
            report = await reconcile(
                install.sessions,
                install.temporal,
                install.settings.task_queue,
                orphan_grace=timedelta(0),
            )
            assert orphan in report.deleted
            # Cancelled, as a delete cancels it: it ends with what it dropped (nothing here).
            ended = await install.temporal.get_workflow_handle(orphan).result()
            assert ended["ended"] == "the task was deleted" and ended["dropped_deliveries"] == []
            # A chain whose wait is resumed through its URL, with a condition on a step.
            chain_body = {
                "name": "chain",
                "type": "recurring",
                "schedule": {"interval_seconds": 86400},
                "action": {
                    "type": "task_chain",
                    "config": {
                        "steps": [
                            {"id": "wait", "wait_for_webhook": {"timeout_seconds": 60}},
                            {
                                "id": "go",
                                "condition": {
                                    "path": "steps.wait.output.go",
                                    "op": "eq",
                                    "value": True,
                                },
                                "action": webhook_action(f"{target.url}/ok/{key}-chain"),
                            },
                        ]
                    },
                },
            }
            chain = (
                await install.api.post("/api/tasks", json=chain_body, headers=install.headers)
            ).json()
            started = await install.api.post(
                f"/api/tasks/{chain['id']}/run", headers=install.headers
            )
            execution_path = f"/api/executions/{started.json()['execution_id']}"

            async def waiting() -> str | None:
                execution = (await install.api.get(execution_path, headers=install.headers)).json()
                steps = execution.get("steps") or []
                if steps and steps[0]["status"] == "waiting":
                    url: str = steps[0]["resume_url"]
                    return url
                return None

            resume_url = await eventually(waiting)
            resumed = await install.api.post(
                "/api/resume/" + resume_url.rsplit("/", 1)[1], json={"go": True}
            )
            assert resumed.status_code == 202, resumed.text
            [chained] = await _executions(install, chain["id"], 1)
            assert chained["status"] == "succeeded"
            full = (await install.api.get(execution_path, headers=install.headers)).json()
            assert [step["status"] for step in full["steps"]] == ["succeeded", "succeeded"]
            assert target.hits(f"{key}-chain") == 1
            for task_id in (task["id"], event_task["id"], chain["id"]):
                await install.api.delete(f"/api/tasks/{task_id}", headers=install.headers)
    finally:
        await deps.close()


async def test_conditions_on_the_last_run_and_notifications(
    installation: Installation, target: HttpTarget
) -> None:
    """`last` is read from this database; a notification's log line is written to it."""
    install, key = installation, uuid.uuid4().hex
    workers, deps = build_workers(install.temporal, install.sessions, install.settings)
    try:
        async with running(workers):
            body = {
                "name": "only after a failure",
                "type": "recurring",
                "schedule": {"interval_seconds": 86400},
                "action": webhook_action(f"{target.url}/ok/{key}"),
                "condition": {"not": {"path": "last.status", "op": "eq", "value": "succeeded"}},
                "notify": {"on": ["always"], "webhook_url": f"{target.url}/echo/{key}-notify"},
            }
            created = await install.api.post("/api/tasks", json=body, headers=install.headers)
            assert created.status_code == 201, created.text
            task = created.json()
            for expected in (1, 2):
                started = await install.api.post(
                    f"/api/tasks/{task['id']}/run", headers=install.headers
                )
                assert started.status_code == 202, started.text
                await _executions(install, task["id"], expected)
            runs = await _executions(install, task["id"], 2)
            assert [run["status"] for run in runs] == ["skipped", "succeeded"]  # newest first
            assert target.hits(key) == 1
            await target.wait_for_hits(f"{key}-notify", 1)
            [notice] = target.requests[f"{key}-notify"]
            assert json.loads(notice["body"])["status"] == "succeeded"
            path = f"/api/executions/{runs[1]['id']}"

            async def logged() -> dict[str, Any] | None:
                full: dict[str, Any] = (await install.api.get(path, headers=install.headers)).json()
                return full if any("notified by" in e["message"] for e in full["logs"]) else None

            await eventually(logged)
    finally:
        await deps.close()
