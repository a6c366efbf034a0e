"""`cronpilot dev` supervises what it starts: it checks its ports before it says it runs,
stops at once on a signal during start-up, stops cleanly on SIGHUP, never leaves its
Temporal dev server behind (even when killed) and never attaches to one left over."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cli import temporal_dev_command, temporal_dev_server
from tests.e2e.test_dev import CRONPILOT
from tests.fixtures.loopback import free_port


def _servers_of(data_dir: Path) -> list[int]:
    """Live Temporal dev servers persisted in this data dir."""
    needle = str(data_dir / "temporal.db").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in command and b"start-dev" in command and state != "Z":
            found.append(int(entry.name))
    return found


async def _until(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


class Dev:
    """A `cronpilot dev` process and what it printed. Given ``cwd``, it runs there, and
    without ``--data-dir`` when ``data_dir`` is that directory's default ``.cronpilot``."""

    def __init__(self, data_dir: Path, ports: dict[str, int], cwd: Path | None = None) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.log = data_dir.parent / f"dev-{ports['api']}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
        default = cwd is not None and data_dir == cwd / ".cronpilot"
        command = [
            CRONPILOT,
            "dev",
            *([] if default else ["--data-dir", str(data_dir)]),
            "--api-port",
            str(ports["api"]),
            "--temporal-port",
            str(ports["temporal"]),
            "--temporal-ui-port",
            str(ports["ui"]),
        ]
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text()

    async def printed(self, text: str, timeout: float = 90) -> None:
        def seen() -> bool:
            assert self.process.poll() is None or text in self.output(), self.output()
            return text in self.output()

        await _until(seen, timeout)

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.ports['api']}") as api:

            async def answered() -> bool:
                try:
                    return (await api.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + 90
            while not await answered():
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, self.output()
                await asyncio.sleep(0.3)

    def ended(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def _dev(tmp_path: Path) -> Iterator[Dev]:
    data_dir = tmp_path / "data"
    dev = Dev(data_dir, {"api": free_port(), "temporal": free_port(), "ui": free_port()})
    try:
        yield dev
    finally:
        dev.kill()
        for pid in _servers_of(data_dir):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def _listening(port: int) -> Iterator[None]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        yield


async def test_a_taken_api_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with _dev(tmp_path) as dev, _listening(dev.ports["api"]):
        assert dev.ended() != 0
        output = dev.output()
        assert f"port {dev.ports['api']} (API) is already in use" in output, output
        assert "Cronpilot is running" not in output and "Traceback" not in output
        assert _servers_of(dev.data_dir) == []


async def test_a_taken_temporal_port_is_refused_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    with _listening(ports["temporal"]):
        dev = Dev(data_dir, ports)
        try:
            assert dev.ended() != 0
        finally:
            dev.kill()
    assert f"port {ports['temporal']} (Temporal) is already in use" in dev.output()
    assert "Cronpilot is running" not in dev.output()


async def test_a_signal_during_start_up_stops_at_once(tmp_path: Path) -> None:
    with _dev(tmp_path) as dev:
        await dev.printed("starting the Temporal dev server")
        dev.process.send_signal(signal.SIGINT)
        assert dev.ended(timeout=20) == 0
        assert "Cronpilot is running" not in dev.output()
        assert "Traceback" not in dev.output(), dev.output()
        await _until(lambda: _servers_of(dev.data_dir) == [], timeout=20)


async def test_sighup_stops_everything_cleanly(tmp_path: Path) -> None:
    with _dev(tmp_path) as dev:
        await dev.ready()
        assert "Cronpilot is running" in dev.output()
        assert len(_servers_of(dev.data_dir)) == 1
        dev.process.send_signal(signal.SIGHUP)
        assert dev.ended() == 0, dev.output()
        assert "cronpilot: stopped" in dev.output()
        assert _servers_of(dev.data_dir) == []
        # What it keeps is its user's alone.
        assert dev.data_dir.stat().st_mode & 0o777 == 0o700
        for name in ("secret-key", "dev-api-key"):
            assert (dev.data_dir / name).stat().st_mode & 0o777 == 0o600


async def test_killed_it_takes_its_temporal_server_down(tmp_path: Path) -> None:
    with _dev(tmp_path) as dev:
        await dev.ready()
        [server] = _servers_of(dev.data_dir)
        dev.process.send_signal(signal.SIGKILL)
        dev.ended()
        await _until(lambda: _servers_of(dev.data_dir) == [], timeout=20)


async def test_a_server_left_over_is_stopped_not_attached(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    # A dev server of this data dir that an earlier run left behind (an older version,
    # a machine crash), still holding the Temporal port and the database file.
    command = temporal_dev_command(
        port=ports["temporal"], ui_port=None, db_file=data_dir / "temporal.db"
    )
    with temporal_dev_server(command, tmp_path / "leftover.log") as leftover:
        (data_dir / "temporal.pid").write_text(f"{leftover.pid}\n")
        await _until(lambda: _servers_of(data_dir) == [leftover.pid])
        dev = Dev(data_dir, ports)
        try:
            await dev.ready()
            output = dev.output()
            assert f"left over from an earlier run (pid {leftover.pid})" in output, output
            assert leftover.poll() is not None, "the leftover server still runs"
            assert len(_servers_of(data_dir)) == 1 and _servers_of(data_dir) != [leftover.pid]
            dev.process.send_signal(signal.SIGINT)
            assert dev.ended() == 0
        finally:
            dev.kill()


async def test_when_its_temporal_server_dies_it_stops_and_says_so(tmp_path: Path) -> None:
    with _dev(tmp_path) as dev:
        await dev.ready()
        [server] = _servers_of(dev.data_dir)
        os.kill(server, signal.SIGKILL)
        assert dev.ended() != 0
        assert "the Temporal dev server exited" in dev.output(), dev.output()
        assert "stopped everything" in dev.output()
