"""The deployment files agree with the code: docker-compose.yml, Dockerfile, the init SQL.

Nothing here runs Docker; the files are parsed and checked against ``Settings``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from schema.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"
SERVICES = {"postgres", "temporal", "temporal-ui", "migrate", "api", "worker"}
APP_SERVICES = ("migrate", "api", "worker")
PREFIX = "CRONPILOT_"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)
TEST_SECRET_KEY = "compose-test-secret-key-" + "x" * 32


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def _interpolate(value: str, supplied: dict[str, str]) -> str:
    """Resolve compose interpolation as `docker compose` would with only ``supplied`` set."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        present = supplied.get(name)
        if op in (":-", "-"):
            return present if present else arg
        if op in (":?", "?"):
            assert present, f"${{{name}}} is required but the test did not supply it"
            return present
        if op in (":+", "+"):
            return arg if present else ""
        return present or ""

    return INTERPOLATION.sub(resolve, value)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _dockerfile_env_keys() -> set[str]:
    keys: set[str] = set()
    for keyword, arguments in _dockerfile_instructions():
        if keyword != "ENV":
            continue
        tokens = shlex.split(arguments)
        if all("=" in token for token in tokens):
            keys.update(token.split("=", 1)[0] for token in tokens)
        else:  # legacy form: ENV NAME value
            keys.add(tokens[0])
    return keys


def _setting_name(key: str) -> str:
    return key.removeprefix(PREFIX).lower()


def test_compose_has_the_six_services() -> None:
    assert set(_compose()["services"]) == SERVICES


def test_api_and_worker_wait_for_migrations_and_temporal() -> None:
    services = _compose()["services"]
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["temporal"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["temporal"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_services_run_the_cronpilot_commands() -> None:
    services = _compose()["services"]
    for name in APP_SERVICES:
        assert services[name]["command"] == ["cronpilot", name], name
    # the image's HEALTHCHECK probes the API port; only the api keeps it
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_app_services_share_one_production_environment() -> None:
    services = _compose()["services"]
    environments = [_environment(services[name]) for name in APP_SERVICES]
    assert environments[0] == environments[1] == environments[2]
    env = environments[0]
    assert env["CRONPILOT_ALLOW_PRIVATE_NETWORKS"] == "false"
    assert env["CRONPILOT_ENV"] == "production"
    assert env["CRONPILOT_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["CRONPILOT_SECRET_KEY"].startswith("${CRONPILOT_SECRET_KEY:?")
    assert env["CRONPILOT_DATABASE_URL"].startswith("postgresql+psycopg://cronpilot:")
    assert env["CRONPILOT_DATABASE_URL"].endswith("@postgres:5432/cronpilot")


def test_every_cronpilot_name_is_a_setting() -> None:
    """Environment keys of every service, names interpolated anywhere, and Dockerfile ENVs."""
    names: set[str] = set()
    for service in _compose()["services"].values():
        names.update(key for key in _environment(service) if key.startswith(PREFIX))
    for match in INTERPOLATION.finditer(COMPOSE.read_text()):
        if match["name"].startswith(PREFIX):
            names.add(match["name"])
    names.update(key for key in _dockerfile_env_keys() if key.startswith(PREFIX))
    assert "CRONPILOT_API_HOST" in names  # the Dockerfile's ENV lines were read
    unknown = sorted(name for name in names if _setting_name(name) not in Settings.model_fields)
    assert not unknown, f"not fields of schema.settings.Settings: {unknown}"


def test_compose_environment_makes_valid_settings() -> None:
    """With only the required secret key supplied, the app's environment validates."""
    env = _environment(_compose()["services"]["api"])
    supplied = {"CRONPILOT_SECRET_KEY": TEST_SECRET_KEY}
    resolved = {_setting_name(key): _interpolate(value, supplied) for key, value in env.items()}
    settings = Settings.model_validate(resolved)
    assert settings.env == "production"
    assert settings.allow_private_networks is False
    assert settings.secret_key == TEST_SECRET_KEY
    assert (
        settings.database_url == "postgresql+psycopg://cronpilot:cronpilot@postgres:5432/cronpilot"
    )


def test_pass_through_defaults_match_settings() -> None:
    """``${CRONPILOT_X:-}`` only for optional strings; any other default is Settings' own."""
    env = _environment(_compose()["services"]["api"])
    for key, value in env.items():
        match = INTERPOLATION.fullmatch(value)
        if not match or match["name"] != key or match["op"] != ":-":
            continue
        field = Settings.model_fields[_setting_name(key)]
        if match["arg"] == "":
            assert field.default is None, f"{key}: empty would replace a real default"
            assert str in getattr(field.annotation, "__args__", ()), f"{key}: not a string"
        else:
            assert match["arg"] == str(field.default), f"{key}: default differs from Settings"


def test_postgres_init_creates_the_databases_compose_uses() -> None:
    compose = _compose()
    services = compose["services"]
    mounts = services["postgres"]["volumes"]
    assert any(
        m.startswith("./deploy/postgres-init.sql:/docker-entrypoint-initdb.d/") for m in mounts
    )
    sql = INIT_SQL.read_text()
    temporal_env = _environment(services["temporal"])
    for database in ("cronpilot", temporal_env["DBNAME"], temporal_env["VISIBILITY_DBNAME"]):
        assert re.search(rf"CREATE DATABASE {database} OWNER", sql), database
    for variable in ("APP_DB_PASSWORD", "TEMPORAL_DB_PASSWORD"):
        assert re.search(rf"^\\getenv \w+ {variable}$", sql, re.MULTILINE), variable
        assert variable in _environment(services["postgres"])
    assert temporal_env["DB"] == "postgres12"
    assert temporal_env["POSTGRES_SEEDS"] == "postgres"
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:1.2")


def test_dockerfile_runs_cronpilot_api_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    commands = [arguments for keyword, arguments in instructions if keyword == "CMD"]
    assert commands, "no CMD"
    command = commands[-1]
    argv = json.loads(command) if command.startswith("[") else shlex.split(command)
    assert argv[:2] == ["cronpilot", "api"]
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    healthchecks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1] and "python" in healthchecks[-1]
    assert any(keyword == "RUN" and "pip install ." in args for keyword, args in instructions)
    env_lines = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "CRONPILOT_API_HOST=0.0.0.0" in env_lines


def test_the_worker_sandboxes_run_code_without_privileges() -> None:
    """run_code's namespaces and scratch tmpfs need Docker's seccomp and AppArmor profiles
    off for the worker, and nothing more: no privileged mode, no capability, no root."""
    worker = _compose()["services"]["worker"]
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(worker["security_opt"])
    assert not worker.get("privileged") and not worker.get("cap_add")
    assert worker.get("user") in (None, "cronpilot", "10001"), "the image's unprivileged user"


def test_the_worker_and_its_programs_have_a_ceiling_together() -> None:
    """Docker gives the worker no cgroup of its own to make (memory_isolated is false
    there): the container's limits bound the worker and every program it runs."""
    worker = _compose()["services"]["worker"]
    assert worker["mem_limit"] == "${WORKER_MEM_LIMIT:-2g}"
    assert worker["pids_limit"] == "${WORKER_PIDS_LIMIT:-1024}"
