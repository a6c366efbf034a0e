"""The OpenAPI document is true: schemathesis generates requests from `/openapi.json` (valid
and invalid ones) against the real API on loopback, and every response must match what the
document says (status codes, media types, bodies), with no server error. The example count
is bounded, and the seed fixed, so the run is repeatable and takes a couple of minutes."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
import uuid
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.main import create_app
from schema import crud
from schema.settings import Settings
from tests.conftest import ApiUser, delete_tasks
from tests.fixtures.loopback import LoopbackServer

MAX_EXAMPLES = 15
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261129


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(
        Path(sysconfig.get_path("scripts")) / "schemathesis"
    )
    assert Path(found).exists(), "schemathesis is part of the test extra"
    return found


async def test_schemathesis_reports_no_failures(
    settings: Settings,
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    async with sessions.begin() as session:
        user = await crud.create_user(session, name=f"fuzz-{uuid.uuid4().hex[:8]}")
        _, key = await crud.create_api_key(session, user_id=user.id)
    server = LoopbackServer()
    await server.serve(create_app(settings, temporal=temporal))
    try:
        process = await asyncio.create_subprocess_exec(
            _schemathesis(),
            "--config-file",
            str(CONFIG),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {key}",
            "--request-timeout",
            "30",
            "--no-color",
            "--generation-database",
            ":memory:",
            # NUL characters are refused everywhere (a documented 422), which a JSON schema
            # of free-form objects cannot say.
            "--generation-allow-x00",
            "false",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        output, _ = await process.communicate()
    finally:
        await server.stop()
        # What the fuzzing created must not keep firing under the tests after this one.
        cleaner = create_app(settings, temporal=temporal)
        async with cleaner.router.lifespan_context(cleaner):
            transport = httpx.ASGITransport(app=cleaner)
            async with httpx.AsyncClient(transport=transport, base_url="http://cleanup") as api:
                await delete_tasks(ApiUser(api, user.id, key))
    text = output.decode(errors="replace")
    sys.stdout.write(text[-20000:])
    assert process.returncode == 0, text[-20000:]
