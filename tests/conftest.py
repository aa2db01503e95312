"""Real servers for the whole run. Each session gets its own PostgreSQL and MariaDB database,
created here and dropped afterwards; a server that is down fails the run (never a skip).

Environment (with the local defaults): SLUICE_TEST_PG_DSN, SLUICE_TEST_MYSQL_HOST/PORT/USER/
PASSWORD.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import asyncmy
import asyncpg
import pytest

from tests.servers import MYSQL, PG_ADMIN_DSN, MySQLServer, PgServer

MYSQL_HOST, MYSQL_PORT = MYSQL["host"], MYSQL["port"]
MYSQL_USER, MYSQL_PASSWORD = MYSQL["user"], MYSQL["password"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # asyncpg and PyMongo's async client need asyncio
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"sluice_test_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.fail(
                f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc} "
                "(run `make services` or start it; tests never skip a missing server)"
            )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    from urllib.parse import urlparse

    u = urlparse(PG_ADMIN_DSN)
    server = PgServer(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres", name)
    yield server
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """A fresh MariaDB database for this test session, dropped at the end."""
    name = f"sluice_test_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        try:
            conn = await asyncmy.connect(
                host=MYSQL_HOST,
                port=MYSQL_PORT,
                user=MYSQL_USER,
                password=MYSQL_PASSWORD,
                autocommit=True,
                connect_timeout=10,
            )
        except Exception as exc:  # the driver raises several unrelated types here
            pytest.fail(
                f"MariaDB is not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc} "
                "(run `make services`; tests never skip a missing server)"
            )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    asyncio.run(admin(f"CREATE DATABASE `{name}`"))
    yield MySQLServer(MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD, name)
    asyncio.run(admin(f"DROP DATABASE IF EXISTS `{name}`"))
