"""Engine and session factory; SQLite gets WAL and a busy timeout so processes can share it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A database that does not accept a connection this fast counts as down (history writes
# hand their record over instead of holding a run open).
CONNECT_TIMEOUT_SECONDS = 10


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite files are created with their folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached (down, refused, dropped, or an
    SQLite file that cannot be opened), as opposed to a query or constraint problem."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        original = error.orig
        if isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
            # Class 08 is "connection exception"; no SQLSTATE at all means no server answered.
            state = getattr(original, "sqlstate", None)
            return state is None or state.startswith("08") or state in ("57P01", "57P03")
        if isinstance(original, sqlite3.OperationalError):
            return "unable to open" in str(original)
        return False
    return isinstance(error, ConnectionError | TimeoutError | OSError)
