"""JSON request bodies, checked as a whole before FastAPI validates them: a body holding
what no JSON store keeps (a NUL character, a lone UTF-16 surrogate such as ``"\\ud800"``,
``NaN`` or ``Infinity``) is a located 422, never a 500 or a value silently stored as
``null``. Every router uses ``CheckedJsonRoute``; the public receivers, which read their
raw bodies themselves, check the same with ``schema.triggers.payload_problem``."""

from __future__ import annotations

import email.message
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.errors import Invalid
from schema.json_values import json_value_problem

# What such a value looks like in the raw body (a NUL or a surrogate as an escape, or a
# surrogate's UTF-8 form, which the parser lets through): the parsed body is walked only
# when one of these appears, so an ordinary body costs one scan of its bytes.
SUSPECT = re.compile(rb"NaN|Infinity|\\u0000|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class CheckedJsonRoute(APIRoute):
    """A route whose JSON body is checked (``json_value_problem``) before validation. The
    parse is Starlette's, cached on the request: FastAPI does not parse it again."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if _is_json(request.headers.get("content-type")):
                raw = await request.body()
                if SUSPECT.search(raw):
                    try:
                        body = await request.json()
                    except (ValueError, RecursionError):
                        return await handler(request)  # FastAPI answers malformed JSON
                    # Depth is the models' business (validate reports it in its answer).
                    problem = json_value_problem(body)
                    if problem:
                        path, message = problem
                        raise Invalid([{"loc": ["body", *path], "msg": message}])
            return await handler(request)

        return checked


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides to parse a body as JSON (it parses none without a content type)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
