"""Handles on the real database servers the tests use (shared by every test package)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncmy
import asyncpg

if TYPE_CHECKING:
    from bench.datasets import Targets

# Environment (with the local defaults) naming the servers every test package uses.
PG_ADMIN_DSN = os.environ.get("SLUICE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL = {
    "host": os.environ.get("SLUICE_TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("SLUICE_TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("SLUICE_TEST_MYSQL_USER", "root"),
    "password": os.environ.get("SLUICE_TEST_MYSQL_PASSWORD", ""),
}


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    database: str

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def run(self, *sql: str) -> list[asyncpg.Record]:
        """Run statements synchronously (fixtures and assertions); returns the last result."""

        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                out: list[asyncpg.Record] = []
                for s in sql:
                    out = await conn.fetch(s)
                return out
            finally:
                await conn.close()

        return asyncio.run(go())


@dataclass(frozen=True)
class MySQLServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    def run(self, *sql: str) -> list[tuple]:
        async def go() -> list[tuple]:
            conn = await asyncmy.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=self.database,
                autocommit=True,
            )
            try:
                out: list[tuple] = []
                async with conn.cursor() as cur:
                    for s in sql:
                        await cur.execute(s)
                        out = list(await cur.fetchall() or [])
                return out
            finally:
                conn.close()

        return asyncio.run(go())


async def pg_admin(sql: str) -> None:
    """One statement on the PostgreSQL admin connection; an unreachable server fails the run."""
    import pytest

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


async def mysql_admin(sql: str) -> None:
    """One statement as the MariaDB admin; an unreachable server fails the run."""
    import pytest

    try:
        conn = await asyncmy.connect(**MYSQL, autocommit=True, connect_timeout=10)
    except Exception as exc:  # the driver raises several unrelated types here
        pytest.fail(
            f"MariaDB is not reachable at {MYSQL['host']}:{MYSQL['port']}: {exc} "
            "(run `make services`; tests never skip a missing server)"
        )
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    finally:
        conn.close()


async def drop_databases(name: str) -> None:
    """Drop the PostgreSQL and MariaDB databases called `name` (if they exist)."""
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await mysql_admin(f"DROP DATABASE IF EXISTS `{name}`")


@contextlib.contextmanager
def fresh_pg() -> Iterator[PgServer]:
    """A PostgreSQL database of its own, dropped afterwards."""
    from urllib.parse import urlparse

    name = f"sluice_test_{secrets.token_hex(4)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    u = urlparse(PG_ADMIN_DSN)
    try:
        yield PgServer(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres", name)
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_mysql() -> Iterator[MySQLServer]:
    """A MariaDB database of its own, dropped afterwards."""
    name = f"sluice_test_{secrets.token_hex(4)}"
    asyncio.run(mysql_admin(f"CREATE DATABASE `{name}`"))
    try:
        yield MySQLServer(MYSQL["host"], MYSQL["port"], MYSQL["user"], MYSQL["password"], name)
    finally:
        asyncio.run(mysql_admin(f"DROP DATABASE IF EXISTS `{name}`"))


@contextlib.contextmanager
def bench_targets(data_dir: Path) -> Iterator[Targets]:
    """Benchmark targets in databases of their own on the real servers (the loader creates
    them), dropped afterwards."""
    from bench.datasets import Targets

    name = f"sluice_bench_test_{secrets.token_hex(4)}"
    try:
        yield Targets(
            pg_admin_dsn=PG_ADMIN_DSN,
            pg_database=name,
            mysql_host=MYSQL["host"],
            mysql_port=MYSQL["port"],
            mysql_user=MYSQL["user"],
            mysql_password=MYSQL["password"],
            mysql_database=name,
            data_dir=data_dir,
        )
    finally:
        asyncio.run(drop_databases(name))
