"""What every HTTP-based action shares: the one classification of what httpx raises and of
unexpected statuses, ``Retry-After``, and reading a body within a limit.

Every action that speaks HTTP (webhook, web_scrape, generate_report's url sources, ai_prompt's
transport, google_workspace) fails with the same names, so ``retry.non_retryable_errors``
means the same everywhere:

- ``HttpTimeout`` (retryable): no (complete) answer in time;
- ``HttpConnectionError`` (retryable): refused, reset, DNS failure, a broken answer;
- ``HttpStatusError``: an unexpected status; retryable for 5xx, 408 and 429, with the delay
  of ``Retry-After`` on 429 and 503; not for other statuses, unless the action says so;
- ``InvalidConfig`` (not retryable): a URL or header httpx cannot send;
- ``TooManyRedirects`` (not retryable): a redirect loop;
- ``BlockedAddress`` (not retryable): the network guard refused the address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from activities._failure import ActionFailure
from activities._network import BlockedAddress

RETRYABLE_STATUSES = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# How much of an error answer is read, to quote its start in the message.
ERROR_BODY_BYTES = 64 * 1024


def retry_after(value: str | None) -> timedelta | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as a delay; None when absent or bad."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), when - datetime.now(UTC))


def where(request: httpx.Request | httpx.URL | str) -> str:
    """A request's method and URL (without its query, which may be long or hold secrets)."""
    method = ""
    if isinstance(request, httpx.Request):
        method, request = f"{request.method} ", request.url
    try:
        url = httpx.URL(request) if isinstance(request, str) else request
    except httpx.InvalidURL:
        return f"{method}{str(request)[:200]}"
    return f"{method}{url.copy_with(query=None, fragment=None)}"


def request_failure(error: Exception, target: str, timeout: float | None = None) -> ActionFailure:
    """The failure for what sending a request to ``target`` raised."""
    if isinstance(error, BlockedAddress):
        return ActionFailure("BlockedAddress", str(error), retryable=False)
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        within = f" within {timeout:g}s" if timeout is not None else " in time"
        return ActionFailure("HttpTimeout", f"{target}: no complete answer{within}", retryable=True)
    if isinstance(error, httpx.TooManyRedirects):
        return ActionFailure("TooManyRedirects", f"{target}: {error}", retryable=False)
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
        # The request itself cannot be sent (bad URL, a header h11 refuses): a retry
        # would send the same.
        return ActionFailure("InvalidConfig", f"{target}: cannot send: {error}", retryable=False)
    reason = f"{type(error).__name__}: {error}".rstrip(": ")
    return ActionFailure("HttpConnectionError", f"{target}: {reason}", retryable=True)


@contextlib.contextmanager
def classified(target: str, timeout: float | None = None) -> Iterator[None]:
    """Raise the shared ``ActionFailure`` for whatever httpx (or the guard, or a deadline)
    raises inside the block."""
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL, BlockedAddress, TimeoutError) as error:
        raise request_failure(error, target, timeout) from None


def text_of(response: httpx.Response, body: bytes) -> str:
    """``body`` decoded with the response's charset (UTF-8 when it names none or a bad one)."""
    try:
        return body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def status_failure(
    response: httpx.Response,
    body: bytes,
    *,
    retryable: bool | None = None,
    error_type: str = "HttpStatusError",
    detail: str | None = None,
) -> ActionFailure:
    """The failure for an unexpected status: retryable for 5xx, 408 and 429 unless
    ``retryable`` says otherwise; ``Retry-After`` honoured on 429 and 503. The message
    quotes the start of ``detail``, or of the body."""
    status = response.status_code
    if retryable is None:
        retryable = status >= 500 or status in RETRYABLE_STATUSES
    delay = None
    if status in RETRY_AFTER_STATUSES:
        delay = retry_after(response.headers.get("retry-after"))
    return ActionFailure(
        error_type,
        f"unexpected HTTP {status} {response.reason_phrase} from {where(response.request)}",
        retryable=retryable,
        retry_after=delay,
        quote=detail if detail is not None else text_of(response, body),
    )


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """A streamed response's body, at most ``limit`` bytes, and whether there was more.
    Reading stops as soon as the limit is passed; the response is closed either way."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    finally:
        await response.aclose()
    return b"".join(chunks)[:limit], size > limit
