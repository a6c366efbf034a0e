"""Run the Alembic migrations of the package against a database URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config that needs no ini file: the package's scripts, the given URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision (blocking)."""
    command.upgrade(alembic_config(url), "head")


async def upgrade_async(url: str) -> None:
    """``upgrade`` from async code: Alembic's env runs its own event loop in a thread."""
    await asyncio.to_thread(upgrade, url)
