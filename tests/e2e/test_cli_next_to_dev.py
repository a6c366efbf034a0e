"""The admin commands next to a running `cronpilot dev`, as a user runs them: in the same
directory (or with --data-dir) and nothing else set; one clear line, and nothing created,
when there is nothing to work on; and help text without doc markup."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from temporalio.client import Client

from schema.crypto import SecretBox
from schema.settings import Settings
from tests.conftest import ADMIN_URL
from tests.e2e.test_dev import CRONPILOT
from tests.e2e.test_dev_supervision import Dev, _servers_of
from tests.fixtures.loopback import free_port

ADMIN_COMMANDS = [
    ["users", "create", "someone"],
    ["keys", "create", "someone"],
    ["keys", "revoke", "6f1c4f9e-5b7a-4c1e-9d3e-1b2c3d4e5f60"],
    ["reconcile"],
    ["secrets", "rotate"],
    ["migrate"],
]


def cronpilot(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The command in ``cwd`` with no CRONPILOT_* variable but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
    return subprocess.run(
        [CRONPILOT, *args],
        cwd=cwd,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal's message: a non-zero exit and one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cronpilot: "), result.stderr
    return result.stderr.strip()


class RunningDev:
    def __init__(self, dev: Dev, directory: Path) -> None:
        self.dev = dev
        self.directory = directory  # where `cronpilot dev` runs, without --data-dir
        self.data_dir = dev.data_dir
        self.api_url = f"http://127.0.0.1:{dev.ports['api']}"
        self.temporal_address = f"127.0.0.1:{dev.ports['temporal']}"
        self.key = (dev.data_dir / "dev-api-key").read_text().strip()

    def api(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=10)

    def database(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "cronpilot.db")


@pytest.fixture(scope="module")
async def running_dev(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningDev]:
    """One `cronpilot dev` started in a directory of its own with its default data dir."""
    directory = tmp_path_factory.mktemp("project")
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    dev = Dev(directory / ".cronpilot", ports, cwd=directory)
    try:
        await dev.ready()
        yield RunningDev(dev, directory)
        dev.process.send_signal(signal.SIGINT)
        assert dev.ended() == 0, dev.output()
    finally:
        dev.kill()
        for pid in _servers_of(dev.data_dir):
            os.kill(pid, signal.SIGKILL)


async def test_users_and_keys_in_the_directory_of_a_running_dev(running_dev: RunningDev) -> None:
    created = cronpilot("users", "create", "alice", cwd=running_dev.directory)
    assert created.returncode == 0, created.stderr
    alice_key = created.stdout.strip()
    async with running_dev.api(alice_key) as api:
        assert (await api.get("/api/me")).json()["name"] == "alice"

    key = cronpilot("keys", "create", "alice", cwd=running_dev.directory)
    assert key.returncode == 0, key.stderr
    key_id = key.stderr.split("key id ")[1].split()[0]
    async with running_dev.api(key.stdout.strip()) as api:
        assert (await api.get("/api/me")).status_code == 200
        revoked = cronpilot("keys", "revoke", key_id, cwd=running_dev.directory)
        assert revoked.returncode == 0, revoked.stderr
        assert (await api.get("/api/me")).status_code == 401


async def test_users_and_keys_from_elsewhere_with_data_dir(
    running_dev: RunningDev, tmp_path: Path
) -> None:
    data_dir = str(running_dev.data_dir)
    created = cronpilot("users", "create", "bob", "--data-dir", data_dir, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    async with running_dev.api(created.stdout.strip()) as api:
        assert (await api.get("/api/me")).json()["name"] == "bob"
    key = cronpilot("keys", "create", "bob", "--data-dir", data_dir, cwd=tmp_path)
    assert key.returncode == 0, key.stderr
    key_id = key.stderr.split("key id ")[1].split()[0]
    revoked = cronpilot("keys", "revoke", key_id, "--data-dir", data_dir, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    for command in (["reconcile"], ["secrets", "rotate"]):
        result = cronpilot(*command, "--data-dir", data_dir, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


async def test_reconcile_uses_the_running_devs_temporal(running_dev: RunningDev) -> None:
    async with running_dev.api() as api:
        created = await api.post(
            "/api/tasks",
            json={
                "name": "reconciled from the CLI",
                "type": "recurring",
                "schedule": {"cron": "0 3 * * *"},
                "action": {"type": "webhook", "config": {"url": "https://example.com/"}},
            },
        )
    assert created.status_code == 201, created.text
    schedule_id = f"task-{created.json()['id']}"
    temporal = await Client.connect(running_dev.temporal_address)
    await temporal.get_schedule_handle(schedule_id).delete()

    result = cronpilot("reconcile", cwd=running_dev.directory)
    assert result.returncode == 0, result.stderr
    assert f"created {schedule_id}" in result.stdout, result.stdout
    await temporal.get_schedule_handle(schedule_id).describe()


async def test_secrets_rotate_next_to_dev_and_a_wrong_key_changes_nothing(
    running_dev: RunningDev,
) -> None:
    async with running_dev.api() as api:
        stored = await api.put("/api/secrets/ROTATED", json={"value": "the-plain-value"})
    assert stored.status_code in (200, 201), stored.text

    def ciphertext() -> str:
        with running_dev.database() as database:
            row = database.execute(
                "SELECT value_encrypted FROM secrets WHERE name = 'ROTATED'"
            ).fetchone()
        return str(row[0])

    right = Settings(
        env="dev", secret_key=(running_dev.data_dir / "secret-key").read_text().strip()
    )
    before = ciphertext()
    wrong = cronpilot("secrets", "rotate", cwd=running_dev.directory, CRONPILOT_SECRET_KEY="w" * 40)
    message = one_line_error(wrong)
    assert "decrypt with neither" in message, message
    assert "nothing was changed" in message
    assert ciphertext() == before
    assert SecretBox(right).decrypt(before) == "the-plain-value"

    rotated = cronpilot("secrets", "rotate", cwd=running_dev.directory)
    assert rotated.returncode == 0, rotated.stderr
    assert re.fullmatch(r"re-encrypted [1-9]\d* secrets\n", rotated.stdout), rotated.stdout
    assert ciphertext() != before
    assert SecretBox(right).decrypt(ciphertext()) == "the-plain-value"


@pytest.mark.parametrize("name", ["", "   ", "\t"])
async def test_an_empty_user_name_is_refused(running_dev: RunningDev, name: str) -> None:
    message = one_line_error(cronpilot("users", "create", name, cwd=running_dev.directory))
    assert "user name cannot be empty" in message
    with running_dev.database() as database:
        [(blank,)] = database.execute("SELECT count(*) FROM users WHERE trim(name) = ''")
    assert blank == 0


async def test_the_running_dev_serves_the_docs_assets(running_dev: RunningDev) -> None:
    async with running_dev.api() as api:
        page = await api.get("/docs")
        [script] = re.findall(r'src="([^"]+\.js)"', page.text)
        asset = await api.get(script)
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")


async def test_reconcile_once_the_dev_stopped_says_so(tmp_path: Path) -> None:
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    dev = Dev(tmp_path / ".cronpilot", ports, cwd=tmp_path)
    try:
        await dev.ready()
        dev.process.send_signal(signal.SIGINT)
        assert dev.ended() == 0, dev.output()
    finally:
        dev.kill()
    message = one_line_error(cronpilot("reconcile", cwd=tmp_path))
    assert f"Temporal at 127.0.0.1:{ports['temporal']}" in message
    assert "is not running" in message
    # What needs only the database still works on a stopped dev's data dir.
    created = cronpilot("users", "create", "after-hours", cwd=tmp_path)
    assert created.returncode == 0, created.stderr


# -- without a running dev ----------------------------------------------------------------


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_in_the_wrong_directory_one_line_and_nothing_created(
    tmp_path: Path, command: list[str]
) -> None:
    message = one_line_error(cronpilot(*command, cwd=tmp_path))
    assert str(tmp_path / ".cronpilot") in message and "--data-dir" in message, message
    missing = tmp_path / "no-such-dir"
    message = one_line_error(cronpilot(*command, "--data-dir", str(missing), cwd=tmp_path))
    assert str(missing) in message, message
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def production_database(tmp_path: Path) -> dict[str, str]:
    """The environment of a production installation on a migrated SQLite file."""
    env = {
        "CRONPILOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'production.db'}",
        "CRONPILOT_SECRET_KEY": "p" * 40,
    }
    migrated = cronpilot("migrate", cwd=tmp_path, **env)
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as peer:
        peer.bind(("127.0.0.1", 0))
        peer.listen()
        yield peer.getsockname()[1]


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port held but not listening: connections to it are refused, and nothing else can
    take it meanwhile (a stranger's Temporal server there would be reconciled)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_reconcile_without_a_reachable_temporal_says_so_in_one_line(
    tmp_path: Path, production_database: dict[str, str], silent_peer: int, refusing_port: int
) -> None:
    for port, problem in ((refusing_port, "refused"), (silent_peer, "did not answer")):
        address = f"127.0.0.1:{port}"
        result = cronpilot(
            "reconcile", cwd=tmp_path, CRONPILOT_TEMPORAL_ADDRESS=address, **production_database
        )
        message = one_line_error(result)
        assert f"Temporal at {address} {problem}" in message, message


def test_a_database_it_cannot_use_is_one_line_and_is_not_created(tmp_path: Path) -> None:
    secret = {"CRONPILOT_SECRET_KEY": "p" * 40}
    missing_file = tmp_path / "typo.db"
    result = cronpilot(
        "users",
        "create",
        "x",
        cwd=tmp_path,
        CRONPILOT_DATABASE_URL=f"sqlite+aiosqlite:///{missing_file}",
        **secret,
    )
    assert f"no database file at {missing_file}" in one_line_error(result)
    assert list(tmp_path.iterdir()) == []
    never_created = make_url(ADMIN_URL).set(database=f"cronpilot_absent_{uuid.uuid4().hex[:8]}")
    url = never_created.render_as_string(hide_password=False)
    result = cronpilot("keys", "create", "x", cwd=tmp_path, CRONPILOT_DATABASE_URL=url, **secret)
    assert "cannot use the database" in one_line_error(result)


# -- help ---------------------------------------------------------------------------------

HELP_PAGES = [
    [],
    ["dev"],
    ["api"],
    ["worker"],
    ["migrate"],
    ["reconcile"],
    ["users"],
    ["users", "create"],
    ["keys"],
    ["keys", "create"],
    ["keys", "revoke"],
    ["secrets"],
    ["secrets", "rotate"],
]


def _option_entries(help_text: str) -> list[str]:
    """Each option's entry: its flags and its help, over however many lines it wraps."""
    entries: list[str] = []
    inside = False
    for line in help_text.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
            inside = True
        elif inside and line.startswith("    "):
            entries[-1] += " " + line.strip()
        else:
            inside = False
    return entries


@pytest.mark.parametrize("page", HELP_PAGES, ids=lambda page: " ".join(page) or "cronpilot")
def test_help_has_no_doc_markup_and_shows_every_default(tmp_path: Path, page: list[str]) -> None:
    result = cronpilot(*page, "--help", cwd=tmp_path, COLUMNS="100")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "`" not in text, text
    options = [entry for entry in _option_entries(text) if not entry.startswith("-h, --help")]
    for entry in options:
        assert "(default:" in entry, entry
    if page in (["dev"], ["api"], ["users", "create"], ["secrets", "rotate"]):
        assert options, text
    assert list(tmp_path.iterdir()) == []
