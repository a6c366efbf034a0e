"""The ``webhook`` action: one outbound HTTP request, with its failures classified."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from activities._action import ActionRun
from activities._http import read_capped, retry_after
from schema.actions import WebhookConfig

MAX_BODY_BYTES = 64 * 1024
ERROR_BODY_CHARS = 300


async def send(run: ActionRun, config: WebhookConfig) -> dict[str, Any]:
    """Send the configured HTTP request; return its status, headers and (capped) body."""
    if not config.url.lower().startswith(("http://", "https://")):
        run.fail("InvalidConfig", "the rendered url must start with http(s)://", retryable=False)
    run.log(f"{config.method} {config.url}")
    started = time.perf_counter()
    try:
        response, body, truncated = await _send(run.deps.http, config)
    except httpx.TimeoutException as error:
        run.fail(
            "HttpTimeout",
            f"no response within {config.timeout_seconds}s ({error!r})",
            retryable=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        run.fail("InvalidConfig", f"bad URL: {error}", retryable=False)
    except httpx.TransportError as error:
        run.fail("HttpConnectionError", f"{type(error).__name__}: {error}", retryable=True)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    run.log(f"HTTP {response.status_code} in {elapsed_ms} ms")
    if not config.accepts(response.status_code):
        _fail_on_status(run, response, body)
    return {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(response, body),
        "body_truncated": truncated,
        "elapsed_ms": elapsed_ms,
    }


async def _send(
    client: httpx.AsyncClient, config: WebhookConfig
) -> tuple[httpx.Response, bytes, bool]:
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
    data, truncated = await read_capped(response, MAX_BODY_BYTES)
    return response, data, truncated


def _decode(response: httpx.Response, body: bytes) -> Any:
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _fail_on_status(run: ActionRun, response: httpx.Response, body: bytes) -> None:
    status = response.status_code
    snippet = body[:ERROR_BODY_CHARS].decode(response.encoding or "utf-8", errors="replace")
    message = f"unexpected HTTP {status} {response.reason_phrase}: {snippet}".rstrip(": ")
    if status == 429:
        run.fail(
            "HttpStatusError",
            message,
            retryable=True,
            retry_after=retry_after(response.headers.get("retry-after")),
        )
    # 408 and 5xx may pass; other 4xx and unexpected statuses will not change by retrying.
    run.fail("HttpStatusError", message, retryable=status == 408 or status >= 500)
