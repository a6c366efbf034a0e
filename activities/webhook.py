"""The ``webhook`` action: one outbound HTTP request, with its failures classified."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from activities._action import ActionRun
from activities._http import classified, read_capped, status_failure, text_of, where
from schema.actions import WebhookConfig

# What is read of a response (memory); the result is bounded by the runtime.
MAX_BODY_BYTES = 1024 * 1024


async def send(run: ActionRun, config: WebhookConfig) -> dict[str, Any]:
    """Send the configured HTTP request; return its status, headers and body."""
    run.log(f"{config.method} {config.url}")
    started = time.perf_counter()
    with classified(f"{config.method} {where(config.url)}", config.timeout_seconds):
        response, body = await _send(run.deps.http, config)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    run.log(f"HTTP {response.status_code} in {elapsed_ms} ms")
    if not config.accepts(response.status_code):
        raise status_failure(response, body)
    return {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(response, body),
        "elapsed_ms": elapsed_ms,
    }


async def _send(client: httpx.AsyncClient, config: WebhookConfig) -> tuple[httpx.Response, bytes]:
    body: dict[str, Any] = {}
    if isinstance(config.body, str):
        body["content"] = config.body.encode()
    elif config.body is not None:
        body["json"] = config.body
    # Merge the configured query into the URL's own (httpx would replace it).
    url = httpx.URL(config.url).copy_merge_params(config.query)
    request = client.build_request(
        config.method,
        url,
        # Names are ASCII tokens (checked with the config); values may be any text.
        headers={name.encode(): value.encode() for name, value in config.headers.items()},
        timeout=config.timeout_seconds,
        **body,
    )
    response = await client.send(request, stream=True)
    data, _ = await read_capped(response, MAX_BODY_BYTES)
    return response, data


def _decode(response: httpx.Response, body: bytes) -> Any:
    text = text_of(response, body)
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text
