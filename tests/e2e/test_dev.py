"""`cronpilot dev` as a user runs it: one process starts everything, serves HTTP, runs tasks,
stops cleanly on Ctrl-C and keeps tasks, schedules and history across a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url
from temporalio.client import Client

from tests.conftest import ADMIN_URL, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.loopback import free_port

CRONPILOT = str(Path(sysconfig.get_path("scripts")) / "cronpilot")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@asynccontextmanager
async def _cronpilot_dev(
    data_dir: Path, ports: dict[str, int], database_url: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
    if database_url:
        env["CRONPILOT_DATABASE_URL"] = database_url
    command = [
        CRONPILOT,
        "dev",
        "--data-dir",
        str(data_dir),
        "--api-port",
        str(ports["api"]),
        "--temporal-port",
        str(ports["temporal"]),
        "--temporal-ui-port",
        str(ports["ui"]),
    ]
    log = open(data_dir.parent / f"dev-{uuid.uuid4().hex[:6]}.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['api']}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def ready() -> bool:
                assert process.poll() is None, Path(log.name).read_text()
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=90, interval=0.5)
            key = (data_dir / "dev-api-key").read_text().strip()
            client.headers["Authorization"] = f"Bearer {key}"
            yield client
        family = _descendants(process.pid)
        assert family, "the Temporal dev server should be a child process"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, Path(log.name).read_text()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not [pid for pid in family if _alive(pid)], "orphan processes after Ctrl-C"
        output = Path(log.name).read_text()
        assert "API key" in output and "cronpilot: stopped" in output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: dev's own SQLite file; else a fresh PostgreSQL database, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    admin = make_url(ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"cronpilot_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_cronpilot_dev_end_to_end(
    tmp_path: Path, target: HttpTarget, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    key = uuid.uuid4().hex
    async with _cronpilot_dev(data_dir, ports, database_url) as api:
        me = (await api.get("/api/me")).json()
        assert me["name"] == "dev"
        home = await api.get("/")
        assert home.status_code == 200 and "Cronpilot" in home.text
        assert (await api.get("/docs")).status_code == 200

        run_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        once = await api.post(
            "/api/tasks",
            json={
                "name": "e2e once",
                "type": "one_time",
                "schedule": {"run_at": run_at},
                "action": {"type": "webhook", "config": {"url": f"{target.url}/ok/{key}-once"}},
            },
        )
        assert once.status_code == 201, once.text
        every = await api.post(
            "/api/tasks",
            json={
                "name": "e2e every 2s",
                "type": "recurring",
                "schedule": {"interval_seconds": 2},
                "action": {
                    "type": "webhook",
                    "config": {"url": f"{target.url}/ok/{key}-every", "method": "GET"},
                },
            },
        )
        assert every.status_code == 201, every.text
        every_id = every.json()["id"]

        async def done(task_id: str, at_least: int) -> list[dict[str, Any]]:
            items = (await api.get(f"/api/tasks/{task_id}/executions")).json()["items"]
            finished = [i for i in items if i["status"] == "succeeded"]
            return finished if len(finished) >= at_least else []

        await eventually(lambda: done(once.json()["id"], 1), timeout=30)
        await eventually(lambda: done(every_id, 2), timeout=30)
        assert (await api.get(f"/api/tasks/{once.json()['id']}")).json()["status"] == "completed"
        paused = await api.post(f"/api/tasks/{every_id}/pause")
        assert paused.json()["status"] == "paused"
        # Events, not a pause of a fixed length: a run started just before the pause ends
        # (and its workflow ends only after its record is written) before history is read.
        temporal = await Client.connect(f"127.0.0.1:{ports['temporal']}")
        schedule = temporal.get_schedule_handle(f"task-{every_id}")

        async def idle() -> bool:
            return not (await schedule.describe()).info.running_actions

        await eventually(idle, timeout=60)
        history = (await api.get(f"/api/tasks/{every_id}/executions")).json()["items"]
        assert all(item["status"] != "running" for item in history)
        assert target.hits(f"{key}-once") == 1

    assert (data_dir / "temporal.db").exists()
    assert (data_dir / "cronpilot.db").exists() == (database_url is None)

    # Restarted on the same data dir: the same key works; tasks, schedules, history remain.
    async with _cronpilot_dev(data_dir, ports, database_url) as api:
        task = (await api.get(f"/api/tasks/{every_id}")).json()
        assert task["status"] == "paused" and task["run_count"] >= 2
        again = (await api.get(f"/api/tasks/{every_id}/executions")).json()["items"]
        assert [i["id"] for i in again][-len(history) :] == [i["id"] for i in history]
        resumed = await api.post(f"/api/tasks/{every_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["next_run_at"] is not None
        before = target.hits(f"{key}-every")
        await eventually(lambda: asyncio.sleep(0, target.hits(f"{key}-every") > before), timeout=20)
