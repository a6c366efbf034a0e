"""The FastAPI application: lifespan (database, Temporal, reconcile), middleware, routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api.deps import AppState
from api.docs import install_docs
from api.errors import (
    BodyTooLarge,
    CatchAllMiddleware,
    install_error_handlers,
    problem_response,
)
from api.headers import AddedHeaders
from api.openapi import install_openapi
from api.reconcile import reconcile
from api.routes import (
    events,
    executions,
    health,
    me,
    resume,
    secrets,
    stats,
    tasks,
    webhooks,
)
from api.web_ui import install_ui
from schema.db import create_engine, create_sessionmaker
from schema.settings import Settings, get_settings
from schema.temporal import connect

log = logging.getLogger("cronpilot.api")
RECONCILE_RETRY_SECONDS = (1, 2, 5, 10, 30, 60)
RECONCILE_EVERY_SECONDS = 600
# Label values come from fixed sets (a client picks the method, and the path, freely): the
# known methods, else "other"; the matched route's template, else "unmatched".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter("cronpilot_http_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram("cronpilot_http_request_seconds", "API latency", ["method", "route"])


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, whether or not they declare a length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def _counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise BodyTooLarge
            return message

        async def _send_unless_exceeded(message: Message) -> None:
            # Frameworks turn a failed body read into their own 400; the 413 replaces it.
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, _counting_receive, _send_unless_exceeded)
        except BodyTooLarge:
            pass
        if exceeded:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, f"the request body exceeds {self.max_bytes} bytes")
        await response(scope, receive, send)


# Every answer says: no content sniffing, no referrer, no framing (pages add their own
# Content-Security-Policy).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def _reconcile_in_background(state: AppState, every: float) -> None:
    """Reconcile at start, retrying until Temporal and the database answer (readiness waits
    for it), then every ``RECONCILE_EVERY_SECONDS``: a schedule left without its task (a
    create that failed half-way while Temporal was down) goes once it is old enough.
    Changes made meanwhile are safe: reconcile takes each task's row lock."""
    attempt = 0
    while True:
        try:
            report = await reconcile(state.sessions, state.temporal, state.settings.task_queue)
        except Exception as error:  # keep serving; readiness says what is down
            delay = RECONCILE_RETRY_SECONDS[min(attempt, len(RECONCILE_RETRY_SECONDS) - 1)]
            log.warning("reconcile failed (%r); retrying in %d s", error, delay)
            attempt += 1
            await asyncio.sleep(delay)
            continue
        attempt = 0
        log.info(
            "reconciled schedules: %d created, %d updated, %d deleted, %d one-time settled, "
            "%d failed",
            len(report.created),
            len(report.updated),
            len(report.deleted),
            len(report.settled),
            len(report.failed),
        )
        state.reconciled.set()
        await asyncio.sleep(every)


def create_app(
    settings: Settings | None = None,
    temporal: Client | None = None,
    *,
    reconcile_every: float = RECONCILE_EVERY_SECONDS,
) -> FastAPI:
    """The API app; tests pass their own settings and client (and may space reconciles out:
    the tests that make drift on purpose reconcile themselves)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url)
        client = temporal or await connect(settings, lazy=True)
        state = AppState(settings, engine, create_sessionmaker(engine), client)
        app.state.cronpilot = state
        reconciling = asyncio.create_task(_reconcile_in_background(state, reconcile_every))
        counting = asyncio.create_task(state.webhook_uses.flush_forever(state.sessions))
        try:
            yield
        finally:
            for task in (reconciling, counting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.dispose()

    app = FastAPI(
        title="Cronpilot",
        version="0.1.0",
        description="Scheduled tasks and automation on Temporal.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from the package rather than a CDN
        redoc_url=None,
        # A path with a slash too many is a 404, not a redirect built from the Host header
        # (which a resume URL with "/" appended would follow).
        redirect_slashes=False,
    )
    install_docs(app)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AddedHeaders, headers=SECURITY_HEADERS)

    @app.middleware("http")
    async def _metrics(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        method = request.method if request.method in HTTP_METHODS else "other"
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
        return response

    for module in (tasks, webhooks, events, resume, executions, stats, secrets, me, health):
        app.include_router(module.router)

    install_ui(app)
    return app
