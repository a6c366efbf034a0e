"""The web UI: ``/`` serves its page and ``/ui/`` its scripts, styles and vendored libraries,
all from the package (no build step, no third-party request), under a strict
Content-Security-Policy. In ``cronpilot dev`` the printed link signs the dev user in: the
page exchanges the link's one-time token for the dev key, from loopback only."""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from api.bodies import CheckedJsonRoute
from api.deps import StateDep
from api.errors import problem_response
from api.headers import AddedHeaders

UI_DIR = Path(__file__).parent / "ui"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}

# No inline script, no eval, nothing from another origin. Styles too come only from files;
# scripts may still set element.style (CSSOM), which CSP does not govern.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
# Beside the headers every answer carries (nosniff, no referrer, no framing: api/main.py).
# Revalidated (ETag) every time: after an upgrade, no module is mixed with an older one from
# the browser's cache.
UI_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}

router = APIRouter(tags=["ui"], route_class=CheckedJsonRoute)


class DevSignIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class DevKey(BaseModel):
    api_key: str


@router.post("/api/dev/sign-in", include_in_schema=False)
async def dev_sign_in(body: DevSignIn, request: Request, state: StateDep) -> Response:
    """Exchange ``cronpilot dev``'s link token for the dev user's key: only in dev, only for a
    client on loopback that addressed the server by a loopback name (no DNS rebinding)."""
    settings = state.settings
    if settings.env != "dev":
        return problem_response(404, "not found")
    if not _is_loopback(request):
        return problem_response(403, "the sign-in link works only from this machine")
    try:
        token = settings.dev_sign_in_file.read_text().strip()
        key = settings.dev_key_file.read_text().strip()
    except OSError:
        return problem_response(404, "not found")
    if not token or not hmac.compare_digest(token.encode(), body.token.encode()):
        return problem_response(401, "this sign-in link is not the current one")
    return Response(
        DevKey(api_key=key).model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _is_loopback(request: Request) -> bool:
    client = request.client.host if request.client else ""
    try:
        if not ipaddress.ip_address(client).is_loopback:
            return False
    except ValueError:
        return False
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK_HOSTS


def _is_ui(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


def install_ui(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
    app.include_router(router)
    app.add_middleware(AddedHeaders, headers=UI_HEADERS, applies=_is_ui)

    @app.get("/", include_in_schema=False)
    async def home() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html")
