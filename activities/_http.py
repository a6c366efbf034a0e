"""One pooled HTTP client per worker process for the actions that make requests."""

from __future__ import annotations

import httpx

_client: httpx.AsyncClient | None = None


def http_client() -> httpx.AsyncClient:
    """The process's shared client; per-request timeouts come from each action's config."""
    global _client
    if _client is None or _client.is_closed:
        _client = httpx.AsyncClient(
            follow_redirects=True,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            headers={"User-Agent": "Cronpilot/0.1"},
        )
    return _client


async def close_http_client() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None
