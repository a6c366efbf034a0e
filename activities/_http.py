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

All of them send through one client, ``OutboundClient``, which follows redirects by its own
rule: a hop to another origin carries none of the request's own headers (nor its
authentication), and neither a request body nor a method other than GET, HEAD or OPTIONS
goes to another origin (see ``OutboundClient``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # httpx's own names for these types, private to it: for mypy only
    from httpx._client import UseClientDefault
    from httpx._types import AuthTypes

from activities._failure import ActionFailure
from activities._network import BlockedAddress

RETRYABLE_STATUSES = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# How much of an error answer is read, to quote its start in the message.
ERROR_BODY_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers a hop sets for itself, not dropped in the sense of the redirect rule's log line.
BODY_AND_HOST = frozenset({"host", "content-length", "transfer-encoding"})
# Methods that a hop may take to another origin: those that change nothing there.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Where ``OutboundClient`` reports what it did to a redirect: the log of the action it sends
# for (the action runtime sets it for each attempt); without one, the worker's log.
redirect_log: ContextVar[Callable[[str], None] | None] = ContextVar("redirect_log", default=None)
logger = logging.getLogger(__name__)


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


class OutboundClient(httpx.AsyncClient):
    """The worker's one HTTP client for actions. It follows redirects by our rule, not by
    httpx's (which drops only ``Authorization`` on a hop to another origin):

    - a hop to the same origin (scheme, host and port; an upgrade from ``http`` on port 80
      to ``https`` on port 443 of the same host counts as the same) keeps every header;
    - a hop to another origin keeps only the client's own headers (``Accept``,
      ``Accept-Encoding``, ``Connection``, ``User-Agent``) and the new ``Host``: whatever
      the request set is dropped, ``Authorization`` and ``Cookie`` included, and it is
      logged on the execution;
    - authentication (``auth=``, the client's or the request's) applies to the first
      request only, as with httpx's own redirects: a hop carries only what the rule above
      keeps of the headers it set;
    - a hop that would send the request's body, or a method other than GET, HEAD or
      OPTIONS, to another origin (307 and 308 keep the method and the body, 301 keeps them
      but for POST) is not followed: the redirect is the answer, and the log says why;
    - cookies a target sets go back only on later hops of the same request (as the cookie
      says), never to another request: the client serves every user.
    """

    def __init__(self, **kwargs: Any) -> None:
        keep_none = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        super().__init__(cookies=keep_none, **kwargs)

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        follow = (
            self.follow_redirects
            if follow_redirects is httpx.USE_CLIENT_DEFAULT
            else bool(follow_redirects)
        )
        if not follow:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=False)
        cookies = httpx.Cookies()
        history: list[httpx.Response] = []
        while True:
            # The first request only: httpx applies the client's auth (or URL credentials)
            # to every request it is given, so a hop is given an auth that adds nothing.
            hop_auth = httpx.Auth() if history else auth
            response = await super().send(
                request, stream=True, auth=hop_auth, follow_redirects=False
            )
            response.history = list(history)
            cookies.extract_cookies(response)
            hop = response.next_request
            if hop is None or not self._may_follow(response, hop):
                break
            # Never read: a redirect's body is not used, and may be large.
            await response.aclose()
            history.append(response)
            if len(history) > self.max_redirects:
                raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=hop)
            cookies.set_cookie_header(hop)
            request = hop
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    def _may_follow(self, response: httpx.Response, hop: httpx.Request) -> bool:
        """Apply our rule to httpx's next request (its headers); False when it is not sent."""
        sent = response.request
        if same_origin(sent.url, hop.url):
            if "cookie" in sent.headers:  # httpx drops it on every hop
                hop.headers["Cookie"] = sent.headers["cookie"]
            return True
        if hop.headers.get("content-length", "0") != "0" or "transfer-encoding" in hop.headers:
            _note(
                f"HTTP {response.status_code} redirects {where(sent)} to another origin "
                f"({where(hop)}): not followed, the request's body is not sent there"
            )
            return False
        if hop.method not in SAFE_METHODS:
            _note(
                f"HTTP {response.status_code} redirects {where(sent)} to another origin "
                f"({where(hop)}): not followed, a {hop.method} is not sent there"
            )
            return False
        kept = httpx.Headers(self.headers)
        for name in ("host", "content-length"):
            if name in hop.headers:
                kept[name] = hop.headers[name]
        dropped = sorted(
            name
            for name, value in sent.headers.items()
            if name not in BODY_AND_HOST and kept.get(name) != value
        )
        hop.headers = kept
        if dropped:
            _note(
                f"HTTP {response.status_code} redirects to another origin ({where(hop)}): "
                f"not sending the headers {', '.join(dropped)} there"
            )
        return True


def same_origin(url: httpx.URL, other: httpx.URL) -> bool:
    """Whether a redirect from ``url`` to ``other`` stays with the same origin: the same
    scheme, host and port, or an upgrade from http (port 80) to https (port 443)."""
    port, other_port = (
        url.port or DEFAULT_PORTS.get(url.scheme),
        other.port or DEFAULT_PORTS.get(other.scheme),
    )
    if url.host != other.host:
        return False
    upgrade = (url.scheme, port, other.scheme, other_port) == ("http", 80, "https", 443)
    return upgrade or (url.scheme, port) == (other.scheme, other_port)


def _note(message: str) -> None:
    log = redirect_log.get()
    if log is None:
        logger.warning(message)
    else:
        log(message)
