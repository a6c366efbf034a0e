"""The `cronpilot` command as an operator runs it: migrate, users, keys, refusal to start."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

CRONPILOT = str(Path(sysconfig.get_path("scripts")) / "cronpilot")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRONPILOT, *args], env=env, capture_output=True, text=True, timeout=60)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONPILOT_")}
    return {**env, **extra}


def test_users_and_keys(tmp_path: Path) -> None:
    env = _env(
        CRONPILOT_SECRET_KEY="s" * 40,
        CRONPILOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
    )
    assert _run("migrate", env=env).returncode == 0
    created = _run("users", "create", "alice", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("\n") == 1 and created.stdout.startswith("cp_")
    again = _run("users", "create", "alice", env=env)
    assert again.returncode != 0 and "exists" in again.stderr

    key = _run("keys", "create", "alice", env=env)
    assert key.returncode == 0 and key.stdout.startswith("cp_") and key.stdout.count("\n") == 1
    key_id = key.stderr.split("key id ")[1].split()[0]
    revoked = _run("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0 and key_id in revoked.stdout
    assert _run("keys", "revoke", key_id, env=env).returncode != 0
    assert _run("keys", "create", "nobody", env=env).returncode != 0


def test_production_without_a_secret_key_refuses_to_start() -> None:
    result = _run("api", env=_env(CRONPILOT_DATABASE_URL="sqlite+aiosqlite:///x.db"))
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "CRONPILOT_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
