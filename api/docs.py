"""The API docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``) served with their scripts and
styles from the package, so they work offline and make no request to a third party, under a
Content-Security-Policy: scripts from the app only (and each page's one inline start-up
script, by its hash), nothing from another origin, no framing."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
SWAGGER_UI = f"{STATIC_URL}/vendor/swagger-ui"
REDOC = f"{STATIC_URL}/vendor/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# The docs' libraries inject their own style elements (ReDoc's styled-components) and run a
# search index in a worker made from a blob: inline styles and blob workers are allowed.
DOCS_POLICY = (
    "default-src 'none'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
)


class DocsPage:
    """A docs page rendered once, answered with the docs' Content-Security-Policy; its
    inline scripts are allowed by their hashes, so no other inline script can run."""

    def __init__(self, page: HTMLResponse) -> None:
        self.html = bytes(page.body).decode()
        hashes = [
            "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in INLINE_SCRIPT.findall(self.html)
        ]
        self.policy = "; ".join([" ".join(["script-src", "'self'", *hashes]), *DOCS_POLICY])

    def response(self) -> HTMLResponse:
        return HTMLResponse(self.html, headers={"Content-Security-Policy": self.policy})


def install_docs(app: FastAPI) -> None:
    """Serve the vendored assets and the two docs pages; the app is made with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN-based pages are not there."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"

    swagger = DocsPage(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
            # The online validator badge would send the spec's URL to swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )
    oauth2_redirect = DocsPage(get_swagger_ui_oauth2_redirect_html())
    redoc_page = DocsPage(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{REDOC}/redoc.standalone.js",
            redoc_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
            with_google_fonts=False,
        )
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return swagger.response()

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return oauth2_redirect.response()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return redoc_page.response()
