"""``ActionFailure``: the one way any part of an action says that the run failed, and how.

Helpers anywhere in ``activities/`` raise it; only the action runtime (``activities/_action.py``)
logs it, redacts it and turns it into Temporal's ``ApplicationError``. Its ``type`` is the
stable name that executions show and that ``retry.non_retryable_errors`` can name.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

# Error messages quote at most this much of what a server answered.
EXCERPT_CHARS = 200
# Only the start of a body is looked at for its excerpt.
EXCERPT_SCAN_CHARS = 64 * 1024
_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^<>]*>", re.S | re.I)


class ActionFailure(Exception):
    """A classified failure: its stable type, a message, and whether a retry could help
    (``retry_after``: a delay the other side asked for, such as a ``Retry-After``).

    ``quote`` is what the other side answered (an error body, an API's error message): the
    runtime appends an ``excerpt`` of it to the message, after redacting secrets from all
    of it, so that a cut never leaves part of a secret behind."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        retryable: bool,
        retry_after: timedelta | None = None,
        quote: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.quote = quote

    def __repr__(self) -> str:
        return f"ActionFailure({self.type!r}, {self.message!r}, retryable={self.retryable})"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text`` for a message: markup (tags, scripts,
    styles, comments) dropped when it looks like HTML or XML, entities decoded, whitespace
    collapsed, and an ellipsis when cut."""
    text = text[:EXCERPT_SCAN_CHARS]
    if text.lstrip().startswith("<"):
        text = html.unescape(_MARKUP.sub(" ", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
