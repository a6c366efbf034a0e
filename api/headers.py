"""Headers added to answers: ``AddedHeaders``, the one middleware for it (every answer's
security headers, the UI's policy and caching)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def everywhere(_: str) -> bool:
    return True


class AddedHeaders:
    """Add ``headers`` to the answers of HTTP requests whose path ``applies``, where the
    answer does not set them itself."""

    def __init__(
        self,
        app: ASGIApp,
        headers: Mapping[str, str],
        applies: Callable[[str], bool] = everywhere,
    ) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
