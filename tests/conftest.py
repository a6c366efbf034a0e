"""Shared fixtures: one Temporal dev server, a PostgreSQL database of our own, the worker,
the API app, an HTTP target, and users with API keys. Everything is real and on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.main import create_app
from cli import temporal_dev_command, temporal_dev_server
from schema import crud
from schema.db import create_engine, create_sessionmaker
from schema.migrate import upgrade
from schema.settings import Settings
from schema.temporal import ensure_search_attributes
from tests.fixtures import histories
from tests.fixtures.actions import ActionHarness
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.fixtures.fake_google import FakeGoogle
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.imap_server import ImapServer
from tests.fixtures.loopback import free_port
from tests.fixtures.smtp_server import SmtpServer
from worker import build_workers, running, until_stopped

T = TypeVar("T")
ADMIN_URL = os.environ.get(
    "CRONPILOT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    admin = make_url(ADMIN_URL)
    name = f"cronpilot_test_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'cronpilot.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(
    request: pytest.FixtureRequest, pg_url: str, sqlite_url: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on each backend in turn: the database layer must behave the same on both."""
    engine = create_engine(pg_url if request.param == "postgresql" else sqlite_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


# A second namespace: an installation per namespace, so a test may run an API on SQLite
# (with its own reconcile) beside the session's PostgreSQL one.
SQLITE_NAMESPACE = "cronpilot-sqlite"
ROLL_EVENTS = 200
SESSION_LONG = 24 * 3600.0


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Temporal dev server for the session, started with `cronpilot dev`'s own command
    (search attributes, SQLite pragmas); it stops with the session, or when pytest dies."""
    port = free_port()
    directory = tmp_path_factory.mktemp("temporal")
    command = temporal_dev_command(
        port=port, ui_port=None, db_file=directory / "temporal.db", namespaces=(SQLITE_NAMESPACE,)
    )
    # Trigger workflows roll over (continue-as-new) after a few hundred events instead of
    # thousands, so the tests that deliver a lot exercise it (nothing else asks for it).
    command += ["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={ROLL_EVENTS}"]
    log = directory / "temporal.log"
    with temporal_dev_server(command, log):
        yield f"127.0.0.1:{port}"


async def connect_when_up(address: str, namespace: str = "default") -> Client:
    """A client once the server answers (and knows the namespace)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(
                address, namespace=namespace, data_converter=pydantic_data_converter
            )
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def temporal(temporal_address: str) -> AsyncIterator[Client]:
    """The session's client; with CRONPILOT_RECORD_HISTORIES set, the session's workflow
    histories of new shapes are kept for the replay test when it ends."""
    client = await connect_when_up(temporal_address)
    yield client
    if os.environ.get(histories.RECORD_ENV):
        written = await histories.record(client, histories.RECORDED_QUERY)
        print(f"\nrecorded {len(written)} new workflow histories")  # noqa: T201


@pytest.fixture(scope="session")
def smtp_peer() -> Iterator[SmtpServer]:
    """The SMTP server the session's worker sends through."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def claude_peer() -> AsyncIterator[FakeAnthropic]:
    """The Messages API the session's worker talks to."""
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def google_peer() -> AsyncIterator[FakeGoogle]:
    """The Google APIs the session's worker calls."""
    server = FakeGoogle()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """The IMAP server mailbox tests read and the session's worker polls (its certificate
    is the worker's ``IMAP_CA_FILE``); each test adds a user of its own."""
    with ImapServer(cert_dir=tmp_path_factory.mktemp("imap")) as server:
        yield server


@pytest.fixture(scope="session")
def settings(
    pg_url: str,
    temporal_address: str,
    smtp_peer: SmtpServer,
    imap_server: ImapServer,
    claude_peer: FakeAnthropic,
    google_peer: FakeGoogle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings(
        env="dev",
        database_url=pg_url,
        temporal_address=temporal_address,
        task_queue=f"cronpilot-test-{uuid.uuid4().hex[:8]}",
        secret_key="test-secret-key-" + "x" * 32,
        temporal_ui_url="http://localhost:8233",
        smtp_host="127.0.0.1",
        smtp_port=smtp_peer.port,
        anthropic_api_key=claude_peer.api_key,
        anthropic_base_url=claude_peer.url,
        google_api_base_url=google_peer.url,
        google_token_url=google_peer.token_url,
        files_root=tmp_path_factory.mktemp("files"),
        imap_ca_file=imap_server.cert_file,
        data_dir=tmp_path_factory.mktemp("data"),
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.resolved_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def worker(
    temporal: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[None]:
    """The real worker (TaskWorkflow, history and action activities) on the test queue,
    supervised as `cronpilot dev` supervises its worker: a worker that stops by itself (say,
    its poll lost the server's connection on a loaded machine) is logged and replaced, so
    one transport error does not fail every later test."""
    stop = asyncio.Event()

    async def supervised() -> None:
        while not stop.is_set():
            workers, deps = build_workers(temporal, sessions, settings)
            try:
                async with running(workers) as ended:
                    if await until_stopped(ended, stop):
                        logging.getLogger("tests").error("the test worker stopped; restarting it")
                        await asyncio.sleep(1)
            finally:
                await deps.close()

    supervisor = asyncio.create_task(supervised())
    yield
    stop.set()
    await supervisor


@pytest.fixture(scope="session")
async def target() -> AsyncIterator[HttpTarget]:
    server = HttpTarget()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def api_app(
    settings: Settings,
    temporal: Client,
    worker: None,  # noqa: ARG001 - runs need a polling worker
) -> AsyncIterator[FastAPI]:
    """The API app, its lifespan running. It reconciles at start only: a periodic pass in
    the middle of the session would undo the drift that reconcile tests make on purpose
    before they reconcile themselves."""
    app = create_app(settings, temporal=temporal, reconcile_every=SESSION_LONG)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.cronpilot.reconciled.wait(), timeout=120)
        yield app


@pytest.fixture(scope="session")
async def app_client(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The API app driven over ASGI."""
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cronpilot") as client:
        yield client


class ApiUser:
    """A user with a fresh API key and helpers for the requests tests make."""

    def __init__(self, client: httpx.AsyncClient, user_id: uuid.UUID, key: str) -> None:
        self.client = client
        self.id = user_id
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def create_task(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.post("/api/tasks", json=body)
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    async def execution(self, execution_id: str, *statuses: str) -> dict[str, Any] | None:
        """One execution in full, when it is in one of ``statuses`` (any, if none given)."""
        response = await self.get(f"/api/executions/{execution_id}")
        if response.status_code != 200:
            return None
        execution: dict[str, Any] = response.json()
        return execution if not statuses or execution["status"] in statuses else None

    async def run_to_end(self, task_id: str, timeout: float = 45) -> dict[str, Any]:
        """Run the task now and wait for that execution to end; the execution in full."""
        started = await self.post(f"/api/tasks/{task_id}/run")
        assert started.status_code == 202, started.text
        execution_id = started.json()["execution_id"]

        async def ended() -> dict[str, Any] | None:
            execution = await self.execution(execution_id)
            return execution if execution and execution["status"] != "running" else None

        return await eventually(ended, timeout=timeout)

    async def ended(self, task_id: str, count: int, timeout: float = 45) -> list[dict[str, Any]]:
        """The task's executions that ended (newest first, as listed), once there are at
        least ``count``."""

        async def enough() -> list[dict[str, Any]] | None:
            response = await self.get(f"/api/tasks/{task_id}/executions")
            items = [run for run in response.json()["items"] if run["status"] != "running"]
            return items if len(items) >= count else None

        return await eventually(enough, timeout=timeout)

    async def executions(self, task_id: str, **params: Any) -> list[dict[str, Any]]:
        """A task's executions in full: the list (which leaves out logs, result and steps),
        then each one read on its own."""
        response = await self.get(f"/api/tasks/{task_id}/executions", params=params)
        assert response.status_code == 200, response.text
        full = []
        for item in response.json()["items"]:
            assert not {"logs", "result", "steps"} & set(item)
            one = await self.get(f"/api/executions/{item['id']}")
            assert one.status_code == 200, one.text
            full.append(one.json())
        return full


@pytest.fixture
async def make_user(
    app_client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Callable[[], Awaitable[ApiUser]]]:
    """Users with fresh API keys. Their tasks are deleted when the test ends, so that no
    test leaves schedules firing (or trigger workflows waiting) under the ones after it."""
    made: list[ApiUser] = []

    async def _make() -> ApiUser:
        async with sessions.begin() as session:
            user = await crud.create_user(session, name=f"user-{uuid.uuid4().hex[:8]}")
            _, key = await crud.create_api_key(session, user_id=user.id)
        made.append(ApiUser(app_client, user.id, key))
        return made[-1]

    yield _make
    for user in made:
        await delete_tasks(user)


async def delete_tasks(user: ApiUser) -> None:
    """Delete every task of ``user`` through the API (their schedules and workflows too)."""
    while True:
        listed = await user.get("/api/tasks", params={"limit": 200})
        if listed.status_code != 200 or not listed.json()["items"]:
            return
        statuses = [
            (await user.request("DELETE", f"/api/tasks/{task['id']}")).status_code
            for task in listed.json()["items"]
        ]
        if 204 not in statuses:
            return  # nothing could be deleted (Temporal cut off by the test, say)


@pytest.fixture
async def user(make_user: Callable[[], Awaitable[ApiUser]]) -> ApiUser:
    return await make_user()


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 30, interval: float = 0.25
) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
async def action_sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for action tests, which need the database but no Temporal server."""
    engine = create_engine(pg_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def harness(
    pg_url: str, action_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> ActionHarness:
    """Run actions directly for a fresh user (see tests/fixtures/actions.py)."""
    async with action_sessions.begin() as session:
        user = await crud.create_user(session, name=f"actions-{uuid.uuid4().hex[:8]}")
    settings = Settings(
        env="dev",
        database_url=pg_url,
        secret_key="test-secret-key-" + "x" * 32,
        files_root=tmp_path / "files",
    )
    return ActionHarness(settings, action_sessions, user.id)


@dataclass
class Installation:
    """An API on one database, its Temporal namespace and a user's requests."""

    settings: Settings
    temporal: Client
    sessions: async_sessionmaker[AsyncSession]
    api: httpx.AsyncClient
    headers: dict[str, str]


@pytest.fixture(params=["postgresql", "sqlite"])
async def installation(
    request: pytest.FixtureRequest,
    settings: Settings,
    sqlite_url: str,
    temporal_address: str,
) -> AsyncIterator[Installation]:
    """PostgreSQL in the session's namespace; SQLite in a namespace of its own (one
    installation per namespace: each reconciles every `task-*` schedule it sees)."""
    if request.param == "sqlite":
        settings = settings.model_copy(
            update={"database_url": sqlite_url, "temporal_namespace": SQLITE_NAMESPACE}
        )
    temporal = await connect_when_up(temporal_address, settings.temporal_namespace)
    await ensure_search_attributes(temporal)
    engine = create_engine(settings.resolved_database_url)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"race-{uuid.uuid4().hex[:8]}")
        _, key = await crud.create_api_key(session, user_id=user.id)
    app = create_app(settings, temporal=temporal)
    async with app.router.lifespan_context(app):
        # Its start-up reconcile runs in the background: a test that makes drift on purpose
        # must not race it (it would repair the drift first).
        await asyncio.wait_for(app.state.cronpilot.reconciled.wait(), timeout=120)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cronpilot") as api:
            yield Installation(
                settings, temporal, sessions, api, {"Authorization": f"Bearer {key}"}
            )
            await delete_tasks(ApiUser(api, user.id, key))  # nothing left firing
    await engine.dispose()
