"""With the database and Temporal unreachable the API still answers: 503, never a trace."""

from __future__ import annotations

import httpx

from api.main import create_app
from schema.settings import Settings
from tests.fixtures.loopback import free_port


async def test_unreachable_dependencies_are_503() -> None:
    closed = free_port()
    settings = Settings(
        env="dev",
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/nothing",
        temporal_address=f"127.0.0.1:{closed}",
        task_queue="unused",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cronpilot") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            detail = ready.json()["detail"]
            assert "database unreachable" in detail and "temporal unreachable" in detail
            tasks = await client.get("/api/tasks", headers={"Authorization": "Bearer cp_x"})
            assert tasks.status_code == 503
            assert tasks.json()["detail"] == "the database is unreachable; try again shortly"
            assert "Traceback" not in tasks.text
