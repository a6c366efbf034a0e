"""Database errors mean what they say: a lost connection is a 503, a conflicting write a
409, anything else a 500 with a correlation id (in the body and the log, never a trace),
and the client's keep-alive connection survives every one of them. The failing requests
are real: a real server on loopback, real SQL against the app's own database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from temporalio.client import Client

from api.deps import AppState
from api.main import create_app
from schema.settings import Settings
from tests.fixtures.loopback import LoopbackServer


@contextlib.asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[int]:
    """The app on a real server (which runs its lifespan) on a free loopback port."""
    server = LoopbackServer()
    await server.serve(app)
    try:
        yield server.port
    finally:
        await server.stop()


def _failing_app(settings: Settings, temporal: Client) -> FastAPI:
    """The real app, plus routes that run real SQL that fails in each way."""
    app = create_app(settings, temporal=temporal)

    def _state() -> AppState:
        state: AppState = app.state.cronpilot
        return state

    async def division_by_zero() -> dict[str, Any]:
        async with _state().sessions() as session:
            await session.execute(text("SELECT 1 / 0"))
        return {}

    async def duplicate_key() -> dict[str, Any]:
        async with _state().sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO users (id, name, created_at) "
                    "SELECT id, name, created_at FROM users LIMIT 1"
                )
            )
        return {}

    async def plain_bug() -> dict[str, Any]:
        raise KeyError("no such thing")

    app.add_api_route("/boom/sql", division_by_zero)
    app.add_api_route("/boom/conflict", duplicate_key)
    app.add_api_route("/boom/bug", plain_bug)
    return app


async def _exchange(port: int, paths: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """The paths requested one after another on ONE keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for path in paths:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: cronpilot\r\nConnection: keep-alive\r\n\r\n".encode()
            )
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            status = int(head.split()[1])
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            answers.append((status, json.loads(await reader.readexactly(length))))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    return answers


@pytest.mark.usefixtures("user")  # a row for the duplicate to collide with
async def test_errors_keep_their_meaning_and_the_connection(
    settings: Settings, temporal: Client, caplog: pytest.LogCaptureFixture
) -> None:
    app = _failing_app(settings, temporal)
    caplog.set_level(logging.INFO, logger="cronpilot.api")
    async with _serve(app) as port:
        answers = await _exchange(
            port, ["/boom/sql", "/healthz", "/boom/conflict", "/healthz", "/boom/bug", "/healthz"]
        )
    statuses = [status for status, _ in answers]
    assert statuses == [500, 200, 409, 200, 500, 200]
    for status, body in answers:
        if status == 500:
            correlation = body["correlation_id"]
            assert correlation in body["detail"]
            assert "Traceback" not in json.dumps(body)
            logged = [r for r in caplog.records if correlation in r.getMessage()]
            assert len(logged) == 1 and logged[0].exc_info is not None
    assert answers[2][1]["status"] == 409


async def test_a_lost_database_is_503(settings: Settings, temporal: Client) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        down = settings.model_copy(
            update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"}
        )
        app = _failing_app(down, temporal)
        async with _serve(app) as served:
            answers = await _exchange(served, ["/boom/sql", "/boom/sql"])
    assert [status for status, _ in answers] == [503, 503]
    assert "correlation_id" not in answers[0][1]
