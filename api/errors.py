"""Problem+json errors: domain exceptions and their mapping to HTTP in one place."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

from api.scheduling import ScheduleRefused
from schema.crud import InvalidCursor
from schema.db import is_unavailable

log = logging.getLogger("cronpilot.api")
PROBLEM = "application/problem+json"
# Temporal down, slow, or throttling us (RESOURCE_EXHAUSTED): try again later.
UNAVAILABLE_RPC = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class BodyTooLarge(Exception):
    """A request body went over the limit while it was read (``BodyLimitMiddleware``)."""


class Problem(Exception):
    """An error the API reports as problem+json with its own status."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors or [])
        self.headers = headers or {}


class NotFound(Problem):
    def __init__(self, what: str = "resource") -> None:
        super().__init__(404, f"{what} not found")


class Conflict(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class Invalid(Problem):
    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__(422, "the request is invalid; see errors", errors)


def problem_response(
    status: int,
    detail: str,
    errors: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
    correlation_id: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if status == 422:
        body["errors"] = [
            {**error, "loc": [_printable(part) for part in error.get("loc", ())]}
            for error in errors
        ]
    if correlation_id:
        body["correlation_id"] = correlation_id
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _printable(part: Any) -> Any:
    """A location part as JSON can carry it: a lone surrogate (a key a client sent) as its
    escape."""
    if isinstance(part, str):
        return part.encode("utf-8", "backslashreplace").decode()
    return part


def internal_error(error: BaseException) -> JSONResponse:
    """A 500 whose body and log line share a correlation id; the trace is only logged."""
    correlation_id = uuid.uuid4().hex
    log.error("unexpected error [correlation_id=%s]", correlation_id, exc_info=error)
    return problem_response(
        500,
        f"unexpected error; it has been logged with correlation id {correlation_id}",
        correlation_id=correlation_id,
    )


def allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at the request's path."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        route_methods = getattr(route, "methods", None)
        match, _ = route.matches({**request.scope, "method": "GET"})
        if route_methods and match != Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


def _routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps an included router whole,
    as one entry that holds its routes; our routers are included without a prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def connection_lost(error: BaseException) -> bool:
    """Whether a database error means the database cannot be reached, or is too busy to
    answer now (SQLite's lock, a pool timeout): a 503, try again."""
    if isinstance(error, PoolTimeout) or is_unavailable(error):
        return True
    original = getattr(error, "orig", None)
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original)


def unique_violation(error: BaseException) -> bool:
    """Whether a write lost to a concurrent one on a unique key (a 409)."""
    original = getattr(error, "orig", None)
    if isinstance(original, psycopg.errors.UniqueViolation):
        return True
    return isinstance(original, sqlite3.IntegrityError) and "UNIQUE" in str(original)


class CatchAllMiddleware:
    """Unexpected errors become a 500 problem here, inside the server's own error handling,
    so the connection stays usable for the client's next request (Starlette's outermost
    handler re-raises, and the server then drops the keep-alive connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except BodyTooLarge:
            raise  # no error: the body limit's own 413, answered outside
        except Exception as error:
            if started:
                raise  # too late for a response of our own
            await internal_error(error)(scope, receive, send)


def validation_errors(
    errors: Sequence[Any], prefix: tuple[str | int, ...] = ()
) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"loc", "msg"}]``, without pydantic's internals."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": str(error["msg"]).removeprefix("Value error, ")}
        for error in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the API can meet to problem+json; never a stack trace."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, error: Problem) -> JSONResponse:
        return problem_response(error.status, error.detail, error.errors, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(
            422, "the request is invalid; see errors", validation_errors(error.errors())
        )

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, error: ValidationError) -> JSONResponse:
        return problem_response(
            422, "the request is invalid; see errors", validation_errors(error.errors(), ("body",))
        )

    @app.exception_handler(InvalidCursor)
    async def _cursor(_: Request, error: InvalidCursor) -> JSONResponse:
        return problem_response(422, str(error), [{"loc": ["query", "cursor"], "msg": str(error)}])

    @app.exception_handler(ScheduleRefused)
    async def _refused(_: Request, error: ScheduleRefused) -> JSONResponse:
        message = f"Temporal refused this schedule: {error}"
        return problem_response(422, message, [{"loc": ["body", "schedule"], "msg": message}])

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Every method the path answers, not only the first route's (Starlette's).
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(error.status_code, str(error.detail), headers=headers)

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, error: RPCError) -> JSONResponse:
        log.warning("Temporal call failed: %s (%s)", error.message, error.status)
        if error.status in UNAVAILABLE_RPC:
            return problem_response(503, "Temporal is unreachable; try again shortly")
        return internal_error(error)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(ConnectionError)
    async def _database(_: Request, error: Exception) -> JSONResponse:
        if connection_lost(error):
            log.warning("database unreachable: %r", getattr(error, "orig", error))
            return problem_response(503, "the database is unreachable; try again shortly")
        if unique_violation(error):
            log.info("conflicting write: %r", getattr(error, "orig", error))
            return problem_response(409, "the change conflicts with another one; try again")
        return internal_error(error)
