"""Claude through the official SDK: one Messages API call with its failures classified.

The SDK speaks ``httpx2``, not ``httpx``; its requests are handed over to the worker's shared
``httpx`` client, so Claude calls go through the outbound network guard and the shared
connection pool like every other action's. Temporal owns retries: the SDK's are off.

A request that gets no answer fails like every HTTP-based action's (``HttpTimeout``,
``HttpConnectionError``, ``BlockedAddress``: ``activities/_http.py``); an error answer keeps
the API's own meaning (``AnthropicRateLimited``, ``AnthropicAuthError``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
from anthropic.types import Message, TextBlock

from activities._action import ActionRun
from activities._failure import ActionFailure
from activities._http import request_failure, retry_after
from activities._network import BlockedAddress

DEFAULT_BASE_URL = "https://api.anthropic.com"
CONNECT_TIMEOUT_SECONDS = 10.0
# The SDK's own estimate of how long a non-streamed answer may take: an hour per 128k tokens,
# never less than ten minutes. The task's timeout still bounds the whole attempt.
SECONDS_PER_OUTPUT_TOKEN = 3600 / 128_000
MIN_READ_TIMEOUT_SECONDS = 600.0
# What the two libraries' transports both understand and hand over.
REQUEST_EXTENSIONS = ("timeout",)
RESPONSE_EXTENSIONS = ("http_version", "reason_phrase")
NOT_RETRYABLE_STATUS = {
    401: "AnthropicAuthError",
    403: "AnthropicPermissionDenied",
    404: "AnthropicNotFound",
}


async def complete(
    run: ActionRun,
    *,
    prompt: str,
    system: str | None,
    model: str | None,
    max_tokens: int,
    temperature: float | None,
) -> dict[str, Any]:
    """Send one user turn to Claude; return its text, model, stop reason and token usage."""
    if temperature is not None:
        # The SDK (2.x) speaks API version 2026-10-21, which answers 400 to any sampling
        # parameter, even the default; failing here says why without spending a request.
        run.fail(
            "InvalidConfig",
            "temperature is no longer accepted by the Anthropic Messages API "
            "(version 2026-10-21 and later); remove it from the action's config",
            retryable=False,
        )
    settings = run.deps.settings
    api_key = settings.anthropic_api_key
    if not api_key:
        run.fail(
            "AnthropicNotConfigured",
            "no Anthropic API key: set CRONPILOT_ANTHROPIC_API_KEY on the worker",
            retryable=False,
        )
    # Not a user secret, so not redacted by default; a server or proxy may still echo it.
    run.hide(api_key)
    model = model or settings.anthropic_model
    base_url = settings.anthropic_base_url or DEFAULT_BASE_URL
    run.log(f"asking {model} at {base_url} (max_tokens {max_tokens})")
    client = anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(
            transport=SharedClientTransport(run.deps.http), trust_env=False
        ),
    )
    try:
        async with client:
            message = await client.messages.create(
                model=model,
                max_tokens=max_tokens,
                messages=[{"role": "user", "content": prompt}],
                system=anthropic.omit if system is None else system,
                timeout=httpx2.Timeout(_read_timeout(max_tokens), connect=CONNECT_TIMEOUT_SECONDS),
            )
    except anthropic.APIStatusError as error:
        raise _status_failure(error) from None
    except anthropic.APIConnectionError as error:  # APITimeoutError included
        raise _transport_failure(error, f"POST {base_url.rstrip('/')}/v1/messages") from None
    if not _is_answer(message):
        # A proxy's page, or JSON of another shape, with a 200: nothing to read; it may
        # answer properly next time.
        shown = str(message)[:200] if isinstance(message, str) else type(message).__name__
        raise ActionFailure(
            "HttpConnectionError",
            f"POST {base_url.rstrip('/')}/v1/messages: the answer is not a Messages API "
            f"response ({shown})",
            retryable=True,
        )
    text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
    usage = {
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }
    run.log(
        f"{message.model} answered ({message.stop_reason}): "
        f"{usage['input_tokens']} input and {usage['output_tokens']} output tokens"
    )
    if message.stop_reason == "max_tokens":
        run.log(f"the answer was cut off at max_tokens ({max_tokens})", level="warning")
    return {
        "text": text,
        "model": message.model,
        "stop_reason": message.stop_reason,
        "usage": usage,
    }


def _is_answer(message: object) -> bool:
    """Whether what the SDK made of a 200 is a message (it passes through any body)."""
    return (
        isinstance(message, Message)
        and isinstance(message.content, list)
        and message.usage is not None
        and isinstance(message.model, str)
    )


def _read_timeout(max_tokens: int) -> float:
    return max(MIN_READ_TIMEOUT_SECONDS, max_tokens * SECONDS_PER_OUTPUT_TOKEN)


def _transport_failure(error: anthropic.APIConnectionError, target: str) -> ActionFailure:
    """The shared failure of the httpx error under the SDK's (or of a timeout)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, httpx.HTTPError | httpx.InvalidURL | BlockedAddress):
            return request_failure(cause, target)
        cause = cause.__cause__
    if isinstance(error, anthropic.APITimeoutError):
        return request_failure(TimeoutError(), target)
    reason = error.__cause__ or error
    return ActionFailure(
        "HttpConnectionError", f"{target}: {type(reason).__name__}: {reason}", retryable=True
    )


def _status_failure(error: anthropic.APIStatusError) -> ActionFailure:
    status = error.status_code
    message = f"HTTP {status} {error.type or 'error'}"
    if error.request_id:
        message += f" (request-id {error.request_id})"
    if status == 401:
        message += ", check CRONPILOT_ANTHROPIC_API_KEY"
    delay = retry_after(error.response.headers.get("retry-after"))
    quote = error.api_message or error.message
    if status == 429:
        error_type, retryable = "AnthropicRateLimited", True
    elif status == 529:
        error_type, retryable = "AnthropicOverloaded", True
    elif status >= 500:
        error_type, retryable = "AnthropicServerError", True
    elif status == 408:
        error_type, retryable = "AnthropicTimeout", True
    else:
        # Any other 4xx is a request the API will refuse again: retrying only burns attempts.
        error_type = NOT_RETRYABLE_STATUS.get(status, "AnthropicInvalidRequest")
        retryable, delay = False, None
    return ActionFailure(error_type, message, retryable=retryable, retry_after=delay, quote=quote)


class SharedClientTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that sends each request through an ``httpx`` client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        outbound = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=await request.aread(),
            extensions={k: v for k, v in request.extensions.items() if k in REQUEST_EXTENSIONS},
        )
        try:
            response = await self._client.send(outbound, stream=True)
        except httpx.TimeoutException as error:
            # The SDK tells timeouts from other connection failures by httpx2's class.
            raise httpx2.TimeoutException(f"{type(error).__name__}: {error}") from error
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=_ResponseBody(response),
            extensions={k: v for k, v in response.extensions.items() if k in RESPONSE_EXTENSIONS},
        )

    async def aclose(self) -> None:
        """Leave the shared client open: it belongs to the worker."""


class _ResponseBody(httpx2.AsyncByteStream):
    """An ``httpx`` response's raw body, still encoded, for ``httpx2`` to decode."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as error:
            raise httpx2.ReadTimeout(f"{type(error).__name__}: {error}") from error

    async def aclose(self) -> None:
        await self._response.aclose()
