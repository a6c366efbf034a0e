"""What the bench scripts share: a private ``cronpilot dev``, a recording HTTP server, stats.

Not a benchmark itself. ``cronpilot_dev`` starts ``python -m cli dev`` on free loopback ports
with a fresh temporary ``--data-dir`` (so SQLite and the Temporal dev server file live there,
as the design's measurements assume), waits for ``GET /readyz``, reads the dev API key and
stops the process with SIGINT on the way out, whatever happened. ``--database-url`` points it
at PostgreSQL instead, in a fresh ``cronpilot_bench_*`` database dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
BENCH_DATABASE_PREFIX = "cronpilot_bench_"
T = TypeVar("T")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="run Cronpilot on PostgreSQL: a SQLAlchemy URL such as "
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres. The script creates a fresh "
        f"{BENCH_DATABASE_PREFIX}* database on that server and drops it at the end. "
        "Default: SQLite in the temporary data dir.",
    )
    parser.add_argument(
        "--reuse-database",
        action="store_true",
        help="use the database named in --database-url as it is instead of a fresh one "
        "(its existing tasks are scheduled too, which may disturb the numbers)",
    )
    parser.add_argument(
        "--keep-data-dir",
        action="store_true",
        help="keep the temporary data dir (logs, SQLite, temporal.db) and print its path",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DevServer:
    """A running ``cronpilot dev``: where its API and Temporal are, and the dev user's key."""

    api_url: str
    api_key: str
    temporal_address: str
    data_dir: Path
    database: str

    def client(self, max_connections: int = 20, timeout: float = 60.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=timeout,
        )


@contextlib.asynccontextmanager
async def cronpilot_dev(args: argparse.Namespace) -> AsyncIterator[DevServer]:
    """Run a private ``cronpilot dev`` for the duration of the block."""
    with contextlib.ExitStack() as stack:
        database_url: str | None = args.database_url
        if database_url and not args.reuse_database:
            database_url = stack.enter_context(_fresh_database(database_url))
        data_dir = Path(tempfile.mkdtemp(prefix="cronpilot-bench-"))
        failed = False  # an error (not an interruption): keep the logs for a look
        try:
            process, log_path = _start(data_dir, database_url)
            try:
                server = await _wait_ready(process, data_dir, database_url)
                print(
                    f"cronpilot dev ready: API {server.api_url}, Temporal "
                    f"{server.temporal_address}, database {server.database}",
                    flush=True,
                )
                yield server
            except Exception:
                failed = True
                raise
            finally:
                _stop(process, data_dir)
                if failed:
                    _print_tail(log_path)
        finally:
            if args.keep_data_dir or failed:
                print(f"data dir kept: {data_dir}", flush=True)
            else:
                shutil.rmtree(data_dir, ignore_errors=True)


def _start(data_dir: Path, database_url: str | None) -> tuple[subprocess.Popen[bytes], Path]:
    ports = {name: free_port() for name in ("api", "temporal", "temporal-ui")}
    command = [sys.executable, "-m", "cli", "dev", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        command += [f"--{name}-port", str(port)]
    # A clean environment: no CRONPILOT_* from the caller's shell (an inherited
    # CRONPILOT_TEMPORAL_ADDRESS would make `dev` skip its own Temporal server).
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRONPILOT_")}
    if database_url:
        env["CRONPILOT_DATABASE_URL"] = database_url
    log_path = data_dir / "cronpilot-dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only this script, which then
            # stops cronpilot itself in order (before dropping its database).
            start_new_session=True,
        )
    return process, log_path


async def _wait_ready(
    process: subprocess.Popen[bytes], data_dir: Path, database_url: str | None
) -> DevServer:
    command = process.args
    assert isinstance(command, list)
    api_port = command[command.index("--api-port") + 1]
    temporal_port = command[command.index("--temporal-port") + 1]
    api_url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"cronpilot dev exited with {process.returncode}; see below")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cronpilot dev not ready within {READY_TIMEOUT:.0f} s")
            await asyncio.sleep(0.3)
    return DevServer(
        api_url=api_url,
        api_key=(data_dir / "dev-api-key").read_text().strip(),
        temporal_address=f"127.0.0.1:{temporal_port}",
        data_dir=data_dir,
        database=_hide_password(database_url) if database_url else "SQLite in the data dir",
    )


def _stop(process: subprocess.Popen[bytes], data_dir: Path) -> None:
    """SIGINT, as Ctrl-C would; escalate only if it hangs, then sweep up its Temporal server."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print("cronpilot dev ignored SIGINT; sending SIGTERM", file=sys.stderr)
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # The Temporal dev server runs in a session of its own; if cronpilot died without
    # stopping it, find it by our unique data dir on its command line, and end it by pid.
    for pid in _pids_mentioning(str(data_dir)):
        print(f"ending leftover process {pid}", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids_mentioning(text: str) -> list[int]:
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _print_tail(log_path: Path, lines: int = 40) -> None:
    with contextlib.suppress(OSError):
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- last lines of {log_path} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


def _hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def _fresh_database(url: str) -> Iterator[str]:
    """A new ``cronpilot_bench_*`` database on the server of ``url``, dropped afterwards."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise SystemExit("--database-url: only PostgreSQL URLs get a fresh database")
    name = BENCH_DATABASE_PREFIX + secrets.token_hex(4)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        assert name.startswith(BENCH_DATABASE_PREFIX)  # never anything else
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- the recording HTTP server the webhook actions call ------------------------------------


@dataclass
class HookServer:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) that answers 200 to
    everything and records, per ``/hook/<token>`` path, the wall-clock arrival times."""

    arrivals: dict[str, list[float]] = field(default_factory=dict)
    count: int = 0
    port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{token}"

    async def __aenter__(self) -> HookServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` requests arrived in all; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self._record(request_line.split(" ")[1], arrived)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 11\r\n\r\n" + b'{"ok":true}'
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Interrupted: end this connection quietly (Python 3.11's streams would log a
            # cancelled handler as an error).
            pass
        finally:
            writer.close()

    def _record(self, path: str, arrived: float) -> None:
        token = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        self.arrivals.setdefault(token, []).append(arrived)
        self.count += 1
        self._changed.set()


# -- small helpers ---------------------------------------------------------------------------


async def bounded(coroutines: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Await all, at most ``limit`` at a time; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[T]) -> T:
        async with semaphore:
            return await coroutine

    return list(await asyncio.gather(*(one(c) for c in coroutines)))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run(bench: Coroutine[Any, Any, T]) -> T:
    """Run a bench to its end. SIGTERM stops it like Ctrl-C: the dev server and the bench
    database are cleaned up, and the process exits saying it was interrupted."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(bench)
    except KeyboardInterrupt:
        sys.exit("interrupted")
