"""Browser tests of the web UI: a real `cronpilot dev` and headless Chromium (Debian's, driven
by Playwright; no browser is downloaded).

The dev runs as a user runs it, in a process of its own, but on the session's Temporal server
(in a namespace of its own: each installation reconciles, and would delete, every `task-*`
schedule of its namespace that its database does not know) and on a fresh PostgreSQL database.

Fixtures: ``ui_server`` (the running dev), ``browser``, ``page`` (a fresh context and page
that fails the test on a console error, an uncaught exception, a failed or 5xx request, or any
request to another origin; ``page_errors.allow(pattern)`` declares one expected) and
``page_errors``. ``shot(page, name)`` saves a named screenshot. CRONPILOT_SKIP_UI_TESTS=1 skips
these tests; otherwise a missing Chromium or Playwright fails them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from cli import temporal_binary
from tests.conftest import ADMIN_URL
from tests.fixtures.loopback import free_port

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Locator,
        Page,
        ViewportSize,
    )
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Request as PlaywrightRequest
    from playwright.sync_api import Response as PlaywrightResponse

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = REPO / "test-artifacts" / "ui"
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
SKIP_ENV = "CRONPILOT_SKIP_UI_TESTS"
UPDATE_DOCS_ENV = "CRONPILOT_UPDATE_DOCS_SCREENSHOTS"
CHROMIUM = os.environ.get("CRONPILOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",  # a container's small /dev/shm crashes tabs otherwise
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# Playwright's waits (actions, expect): generous, the machine may be busy with other tests.
ACTION_TIMEOUT_MS = 15_000
EXPECT_TIMEOUT_MS = 10_000
UI_LINE = re.compile(r"^\s*UI\s+(?P<url>http://\S+#token=\S+)\s*$", re.MULTILINE)
PR_SET_PDEATHSIG = 1


def _skipping() -> bool:
    return os.environ.get(SKIP_ENV, "") not in ("", "0")


def _playwright_missing() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return True
    return False


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Skipped, and without Playwright: the test modules (which import it) are not read."""
    if collection_path.parent == HERE and collection_path.name.startswith("test_"):
        if _skipping() and _playwright_missing():
            return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _skipping():
        return
    marker = pytest.mark.skip(reason=f"{SKIP_ENV} is set: the browser tests of the web UI skip")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(marker)


# -- the server -----------------------------------------------------------------------------


@dataclass
class UiServer:
    """A running `cronpilot dev`: where it serves, its sign-in link and the dev user's key."""

    base_url: str  # http://127.0.0.1:PORT
    sign_in_url: str  # the banner's UI link, with its #token=... fragment
    api_key: str
    data_dir: Path
    log: Path
    client: httpx.Client  # the API, as the dev user

    def api(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """A request to the REST API with the dev user's key, to set up or check state."""
        return self.client.request(method, path, json=json)

    def output(self) -> str:
        """What the dev printed (stdout and stderr) so far."""
        return self.log.read_text(errors="replace")


def _cronpilot_command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "cronpilot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child, before exec: get SIGTERM when pytest dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)

    def _arrange() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return _arrange


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A fresh PostgreSQL database (`cronpilot dev` migrates it), dropped afterwards."""
    admin = make_url(ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"cronpilot_ui_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_namespace(address: str, namespace: str) -> None:
    """Register ``namespace`` on the session's Temporal server (which may still be starting)
    and wait until it answers there."""
    binary, where = temporal_binary(), ["--address", address, "--namespace", namespace]
    deadline = time.monotonic() + 60
    for step in (["operator", "namespace", "create"], ["schedule", "list"]):
        while True:
            done = subprocess.run(
                [binary, *step, *where], capture_output=True, text=True, timeout=30
            )
            if done.returncode == 0 or "already" in done.stderr:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"`temporal {' '.join(step)}` for namespace {namespace} at {address} "
                    f"failed:\n{done.stderr}"
                )
            time.sleep(0.3)


def _wait_until_running(process: subprocess.Popen[bytes], log: Path) -> tuple[str, str]:
    """The banner's UI link and the base URL, once the banner is out and /readyz is 200."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=5) as probe:
        while True:
            output = log.read_text(errors="replace")
            if process.poll() is not None:
                pytest.fail(
                    f"cronpilot dev exited (code {process.returncode}) before it ran:\n{output}"
                )
            match = UI_LINE.search(output)
            if match:
                link = match["url"]
                base = link.split("#", 1)[0].rstrip("/")
                with contextlib.suppress(httpx.TransportError):
                    if probe.get(f"{base}/readyz").status_code == 200:
                        return link, base
            if time.monotonic() > deadline:
                pytest.fail(
                    f"cronpilot dev was not ready within {START_TIMEOUT:g} s (no UI line on "
                    f"stdout, or /readyz not 200); its output:\n{output}"
                )
            time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> str | None:
    """Ctrl-C, then SIGKILL (to its whole process group) after ``STOP_TIMEOUT``; what went
    wrong, if anything."""
    problem = None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            problem = f"cronpilot dev did not stop within {STOP_TIMEOUT:g} s of SIGINT; killed"
    # Its own session: whatever it started and left behind goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if problem is None and process.returncode != 0:
        problem = f"cronpilot dev exited with code {process.returncode} on SIGINT"
    return problem


@pytest.fixture(scope="package")
def ui_server(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiServer]:
    """`cronpilot dev` in a subprocess, on free ports, with a temporary data dir, a fresh
    PostgreSQL database, the session's Temporal server (a namespace and a task queue of its
    own) and private networks allowed. One for all of tests/ui, stopped after its last test
    (not left polling beside the rest of the session); its state carries from test to test."""
    directory = tmp_path_factory.mktemp("ui-dev")
    data_dir = directory / "data"
    log = directory / "dev.log"
    suffix = uuid.uuid4().hex[:10]
    namespace = f"cronpilot-ui-{suffix}"
    _create_namespace(temporal_address, namespace)
    with _database() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
        env |= {
            "CRONPILOT_TEMPORAL_ADDRESS": temporal_address,
            "CRONPILOT_TEMPORAL_NAMESPACE": namespace,
            "CRONPILOT_TASK_QUEUE": f"ui-{suffix}",
            "CRONPILOT_DATABASE_URL": database_url,
            "CRONPILOT_ALLOW_PRIVATE_NETWORKS": "true",
        }
        command = [
            *_cronpilot_command(),
            "dev",
            "--data-dir",
            str(data_dir),
            "--api-port",
            str(free_port()),
            # Unused with an existing Temporal server, but never the defaults.
            "--temporal-port",
            str(free_port()),
            "--temporal-ui-port",
            str(free_port()),
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=REPO if command[0] == sys.executable else directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        try:
            sign_in_url, base_url = _wait_until_running(process, log)
            api_key = (data_dir / "dev-api-key").read_text().strip()
            headers = {"Authorization": f"Bearer {api_key}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
                yield UiServer(base_url, sign_in_url, api_key, data_dir, log, client)
        finally:
            problem = _stop(process)
    if problem:
        pytest.fail(f"{problem}; its output:\n{log.read_text(errors='replace')}")


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's, never one Playwright downloads) for one test module.

    Not for the session: while Playwright's sync API runs, it marks its event loop as this
    thread's running loop, and pytest-asyncio cannot run a coroutine then ("Runner.run()
    cannot be called from a running event loop"). So Playwright stops when the module ends,
    before the async tests of other modules, and a UI test module holds only sync tests
    (and sync fixtures)."""
    if _skipping():
        pytest.skip(f"{SKIP_ENV} is set")
    how = f"(or set {SKIP_ENV}=1 to skip the browser tests)"
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium, or point "
            f"CRONPILOT_CHROMIUM at one {how}",
            pytrace=False,
        )
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is missing: pip install -e '.[test]' {how}", pytrace=False)
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
        except Exception as error:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {error}", pytrace=False)
        yield launched
        launched.close()
    finally:
        playwright.stop()


class PageProblems:
    """What went wrong in a test's browser context, one line each. A test expects a problem
    with ``allow(pattern)``: lines in which the regular expression is found are not failures
    (``page_errors.allow("401")`` for a refused key's "status of 401" console error)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def add(self, line: str) -> None:
        self.seen.append(line)

    def unexpected(self) -> list[str]:
        return [line for line in self.seen if not any(p.search(line) for p in self.allowed)]


@pytest.fixture
def page_errors() -> PageProblems:
    """The current test's page problems; ``page_errors.allow(pattern)`` to expect one."""
    return PageProblems()


def _watch(context: BrowserContext, base_url: str, problems: PageProblems) -> None:
    def same_origin(url: str) -> bool:
        return url == base_url or url.startswith(f"{base_url}/")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url") or "?"
            problems.add(f"console error: {message.text} (at {where})")

    def on_page_error(error: PlaywrightError) -> None:
        problems.add(f"uncaught exception: {error.message}\n{error.stack or ''}".rstrip())

    def on_request(request: PlaywrightRequest) -> None:
        if not same_origin(request.url) and not request.url.startswith(("data:", "blob:")):
            problems.add(f"request to another origin: {request.method} {request.url}")

    def on_request_failed(request: PlaywrightRequest) -> None:
        failure = request.failure or "?"
        # A fetch the UI aborted itself (a superseded search, a closed view) is no failure;
        # a request to another origin is reported once, above.
        if "ERR_ABORTED" in failure or not same_origin(request.url):
            return
        problems.add(f"request failed: {request.method} {request.url}: {failure}")

    def on_response(response: PlaywrightResponse) -> None:
        if response.status >= 500:
            problems.add(f"HTTP {response.status}: {response.request.method} {response.url}")

    context.on("console", on_console)
    context.on("weberror", lambda web_error: on_page_error(web_error.error))
    context.on("request", on_request)
    context.on("requestfailed", on_request_failed)
    context.on("response", on_response)


def _artifact_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "page"


@pytest.fixture
def page(
    browser: Browser,
    ui_server: UiServer,
    page_errors: PageProblems,
    request: pytest.FixtureRequest,
) -> Iterator[Page]:
    """A page in a fresh context (1280x800, light, en-US, UTC; ``page.goto("/")`` works).
    At the end, whatever happened, its screenshot goes to test-artifacts/ui/<test>.png; then
    the test fails if the page had a problem that it did not ``page_errors.allow``."""
    context = browser.new_context(
        base_url=ui_server.base_url,
        viewport=VIEWPORT,
        color_scheme="light",
        locale="en-US",
        timezone_id="UTC",
        reduced_motion="reduce",
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    _watch(context, ui_server.base_url, page_errors)
    opened = context.new_page()
    try:
        yield opened
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(
            path=ARTIFACTS / f"{_artifact_name(request.node.name)}.png",
            full_page=True,
            animations="disabled",
        )
    finally:
        context.close()
    unexpected = page_errors.unexpected()
    if unexpected:
        listed = "\n".join(f"  - {line}" for line in unexpected)
        pytest.fail(
            f"the page had {len(unexpected)} problem(s) (expect one with "
            f"page_errors.allow(pattern)):\n{listed}",
            pytrace=False,
        )


def shot(page: Page, name: str, *, full_page: bool = False, docs: bool = False) -> Path:
    """Save a screenshot as test-artifacts/ui/<name>.png; a ``docs`` one, with
    CRONPILOT_UPDATE_DOCS_SCREENSHOTS=1, also as docs/screenshots/<name>.png (the README's)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{_artifact_name(name)}.png"
    page.screenshot(path=path, full_page=full_page, animations="disabled", caret="hide")
    if docs and os.environ.get(UPDATE_DOCS_ENV, "") not in ("", "0"):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def new_task(page: Page, name: str, task_type: str | None = None) -> Locator:
    """Open the New task wizard, fill its name and, when given, pick its type card
    (``One-time``, ``Recurring``, ``Trigger``); the wizard's dialog."""
    page.get_by_role("button", name="New task", exact=True).click()
    wizard = page.get_by_role("dialog", name="New task")
    wizard.get_by_label("Name", exact=True).fill(name)
    if task_type:
        wizard.get_by_role("radio", name=task_type, exact=True).check()
    return wizard
