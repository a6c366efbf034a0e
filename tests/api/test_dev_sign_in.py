"""`cronpilot dev`'s sign-in link: the page exchanges its token for the dev key through
POST /api/dev/sign-in, which answers only a client on loopback that named the server by a
loopback name, and only for the current token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from schema.settings import Settings


@pytest.fixture
def token(settings: Settings) -> Iterator[str]:
    made = secrets.token_urlsafe(24)
    settings.dev_sign_in_file.write_text(made + "\n")
    settings.dev_key_file.write_text("cp_the-dev-key\n")
    yield made
    settings.dev_sign_in_file.unlink()
    settings.dev_key_file.unlink()


def _client(app: FastAPI, client: str, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"])
async def test_the_current_token_from_loopback_gets_the_dev_key(
    api_app: FastAPI, token: str, host: str
) -> None:
    async with _client(api_app, "127.0.0.1", host) as client:
        answer = await client.post("/api/dev/sign-in", json={"token": token})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"api_key": "cp_the-dev-key"}
        assert answer.headers["cache-control"] == "no-store"
        stale = await client.post("/api/dev/sign-in", json={"token": token[:-1] + "x"})
        assert stale.status_code == 401
        assert "api_key" not in stale.text


@pytest.mark.parametrize(
    ("client", "host"),
    [
        ("192.0.2.7", "127.0.0.1:8000"),  # another machine
        ("127.0.0.1", "evil.example:8000"),  # DNS rebinding: loopback, named otherwise
        ("127.0.0.1", "127.0.0.1.nip.io"),
    ],
)
async def test_anything_but_loopback_is_refused(
    api_app: FastAPI, token: str, client: str, host: str
) -> None:
    async with _client(api_app, client, host) as http:
        answer = await http.post("/api/dev/sign-in", json={"token": token})
        assert answer.status_code == 403, answer.text
        assert "cp_the-dev-key" not in answer.text


async def test_no_token_file_means_no_sign_in(api_app: FastAPI, settings: Settings) -> None:
    assert not settings.dev_sign_in_file.exists()
    async with _client(api_app, "127.0.0.1", "127.0.0.1:8000") as client:
        answer = await client.post("/api/dev/sign-in", json={"token": "anything"})
        assert answer.status_code == 404


async def test_the_ui_page_carries_its_security_headers(app_client: httpx.AsyncClient) -> None:
    page = await app_client.get("/")
    assert page.status_code == 200
    assert '<script src="/ui/app.js" type="module">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    module = await app_client.get("/ui/app.js")
    assert module.status_code == 200
    assert module.headers["cache-control"] == "no-cache"
    assert module.headers["content-security-policy"] == policy
    for licence in ("preact-htm/LICENSE-preact", "preact-htm/LICENSE-htm", "codemirror/LICENSE"):
        assert (await app_client.get(f"/ui/vendor/{licence}")).status_code == 200
    docs = await app_client.get("/docs")  # a policy of its own (it has an inline script)
    assert docs.headers["content-security-policy"] != policy
