"""API keys and isolation: another user's anything is a 404, never a 403 and never data."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema import crud
from tests.conftest import ApiUser, eventually
from tests.fixtures.http_target import HttpTarget
from tests.fixtures.tasks import recurring


async def test_every_api_route_needs_a_key(app_client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/me"),
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", f"/api/tasks/{uuid.uuid4()}"),
        ("GET", "/api/stats"),
        ("POST", "/api/tasks/validate"),
        ("GET", "/api/tasks/upcoming"),
        ("GET", f"/api/executions/{uuid.uuid4()}"),
    ]:
        response = await app_client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        wrong = await app_client.request(method, path, headers={"Authorization": "Bearer cp_nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "invalid or revoked API key"


async def test_me_and_revoked_keys(
    user: ApiUser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    me = await user.get("/api/me")
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id) and me.json()["name"].startswith("user-")
    async with sessions.begin() as session:
        key, plain = await crud.create_api_key(session, user_id=user.id)
    second = {"Authorization": f"Bearer {plain}"}
    assert (await user.client.get("/api/me", headers=second)).status_code == 200
    async with sessions.begin() as session:
        assert await crud.revoke_api_key(session, key_id=key.id)
        assert not await crud.revoke_api_key(session, key_id=key.id)
    assert (await user.client.get("/api/me", headers=second)).status_code == 401
    assert (await user.get("/api/me")).status_code == 200


async def test_another_users_resources_are_not_found(
    make_user: Callable[[], Awaitable[ApiUser]], target: HttpTarget
) -> None:
    owner, intruder = await make_user(), await make_user()
    task = await owner.create_task(
        recurring(f"{target.url}/ok/{uuid.uuid4().hex}", interval_seconds=3600)
    )
    await owner.post(f"/api/tasks/{task['id']}/run")
    runs = await eventually(lambda: owner.executions(task["id"], status="succeeded"))
    execution_id = runs[0]["id"]
    tid = task["id"]
    body = recurring("http://127.0.0.1:9/", interval_seconds=60)

    for method, path, payload in [
        ("GET", f"/api/tasks/{tid}", None),
        ("PUT", f"/api/tasks/{tid}", body),
        ("PATCH", f"/api/tasks/{tid}", {"name": "stolen"}),
        ("DELETE", f"/api/tasks/{tid}", None),
        ("POST", f"/api/tasks/{tid}/pause", None),
        ("POST", f"/api/tasks/{tid}/resume", None),
        ("POST", f"/api/tasks/{tid}/run", None),
        ("GET", f"/api/tasks/{tid}/executions", None),
        ("GET", f"/api/tasks/{tid}/stats", None),
        ("GET", f"/api/executions/{execution_id}", None),
    ]:
        response = await intruder.request(method, path, json=payload)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert tid not in response.text and execution_id not in response.text

    listed = (await intruder.get("/api/tasks")).json()
    assert listed == {"items": [], "next_cursor": None}
    upcoming = (await intruder.get("/api/tasks/upcoming")).json()
    assert upcoming == {"items": []}
    stats = (await intruder.get("/api/stats")).json()
    assert sum(stats["tasks"].values()) == 0 and sum(stats["executions"].values()) == 0
    bulk = await intruder.post("/api/tasks/bulk-delete", json={"ids": [tid]})
    assert bulk.json()["results"] == [{"id": tid, "ok": False, "error": "task not found"}]

    # The owner's task is untouched by all of that.
    mine = (await owner.get(f"/api/tasks/{tid}")).json()
    assert mine["name"] == task["name"] and mine["status"] == "active"
    assert len(await owner.executions(tid)) == 1
    assert (await owner.get(f"/api/executions/{execution_id}")).status_code == 200
