"""The API docs work offline: /docs and /redoc reference only the app's own URLs, and every
script, style sheet and icon they reference is served by the app itself."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from schema.settings import Settings

# Attributes through which a page makes the browser fetch something.
FETCHED = re.compile(r'\b(?:src|href|spec-url)="([^"]+)"')
JS_URL = re.compile(r"\burl: '([^']+)'")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        env="dev",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        secret_key="docs-test-" + "k" * 32,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cronpilot") as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_everything_from_the_app(api: httpx.AsyncClient, page: str) -> None:
    response = await api.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.findall(r"https?://", html) == [], html
    assert "fonts.googleapis" not in html
    fetched = FETCHED.findall(html) + JS_URL.findall(html)
    assert "/openapi.json" in fetched
    kinds = {Path(url).suffix for url in fetched}
    assert ".js" in kinds and (page == "/redoc" or ".css" in kinds), fetched
    for url in fetched:
        assert url.startswith("/"), url
        asset = await api.get(url)
        assert asset.status_code == 200, url
        expected = CONTENT_TYPES[Path(url).suffix]
        assert asset.headers["content-type"].split(";")[0] == expected, url
        assert asset.content, url


async def test_each_vendored_library_keeps_its_licence() -> None:
    vendor = Path(__file__).parents[2] / "api" / "static" / "vendor"
    for library in ("swagger-ui", "redoc"):
        assert (vendor / library / "LICENSE").read_text().strip()
