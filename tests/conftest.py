"""Real servers for the whole run. Each session gets its own PostgreSQL and MariaDB database,
created here and dropped afterwards; a server that is down fails the run (never a skip).

Environment (with the local defaults): SLUICE_TEST_PG_DSN, SLUICE_TEST_MYSQL_HOST/PORT/USER/
PASSWORD.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import MySQLServer, PgServer, fresh_mysql, fresh_pg


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # asyncpg and PyMongo's async client need asyncio
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg() as server:
        yield server


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """A fresh MariaDB database for this test session, dropped at the end."""
    with fresh_mysql() as server:
        yield server
