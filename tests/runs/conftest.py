"""Run-store fixtures: every manager test runs on the embedded SQLite store and on the
PostgreSQL store (a schema of its own inside the session database)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.run_store import RunStore
from engine.run_store_postgres import PostgresRunStore
from engine.run_store_sqlite import SqliteRunStore
from tests.servers import PgServer

StoreFactory = Callable[[], RunStore]


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: PgServer
) -> StoreFactory:
    """Builds stores over ONE location, so a second store models a restart or a second
    process sharing the first one's data."""
    if request.param == "sqlite":
        path = tmp_path / "runs.sqlite"
        return lambda: SqliteRunStore(path)
    schema = f"runs_{secrets.token_hex(4)}"
    request.addfinalizer(lambda: pg_server.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return lambda: PostgresRunStore(f"{pg_server.dsn}?schema={schema}")
