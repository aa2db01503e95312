"""The corpora against real databases: the hostile queries are blocked before anything runs
(row counts and the table list are unchanged afterwards), and every benign query's rewritten
text actually runs on PostgreSQL, MariaDB, SQLite and DuckDB through the real connectors.

Each backend gets a database of its own (the session databases are shared with other test
packages that drop and recreate their own tables).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import duckdb
import pytest

from connectors import registry
from connectors.base import Connector, Statement
from connectors.config import DatabaseConfig
from connectors.registry import database_config
from engine.config import Config, load_config_text
from engine.statements import to_statement
from safety.pipeline import check
from safety.types import CheckRequest, Step
from tests.safety.conftest import DATABASES, TABLES_POLICY, load_corpus
from tests.servers import MySQLServer, PgServer

TABLES = ("users", "orders", "items", "secrets", "audit_log", "scratch")
N_ITEMS = 150  # over the corpus cap of 100, so the cap + 1 fetch shows

SCHEMA = [
    "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100), "
    "ssn VARCHAR(20), password_hash VARCHAR(100), update_at VARCHAR(30), "
    "created_at VARCHAR(30))",
    "CREATE TABLE orders (id INT PRIMARY KEY, user_id INT, amount DECIMAL(10,2), "
    "status VARCHAR(20), note VARCHAR(100))",
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))",
    "CREATE TABLE secrets (id INT PRIMARY KEY, token VARCHAR(100))",
    "CREATE TABLE audit_log (id INT PRIMARY KEY, msg VARCHAR(200))",
    "CREATE TABLE scratch (id INT, v VARCHAR(50))",
    "INSERT INTO users VALUES (1, 'ann', 'ann@example.com', '111-22-3333', 'h1', '2024-01-01', "
    "'2023-01-01'), (2, 'bob', 'bob@example.com', '222-33-4444', 'h2', '2025-02-02', "
    "'2023-02-02')",
    "INSERT INTO orders VALUES (1, 1, 12.50, 'paid', 'first'), (2, 1, 3.00, 'new', NULL), "
    "(3, 2, 40.00, 'paid', 'big')",
    "INSERT INTO items VALUES "
    + ", ".join(f"({i}, 'item {i}', {i % 17}.25)" for i in range(1, N_ITEMS + 1)),
    "INSERT INTO secrets VALUES (1, 'hunter2')",
    "INSERT INTO audit_log VALUES (1, 'created'), (2, 'updated')",
    "INSERT INTO scratch VALUES (1, 'a')",
]

TABLE_LIST = {
    "postgres": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    "mysql": "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "duckdb": "SELECT table_name FROM information_schema.tables",
}


@dataclass
class Backend:
    dialect: str
    db: DatabaseConfig


def _pg(pg_server: PgServer) -> Iterator[Backend]:
    name = f"{pg_server.database}_safety"
    admin = PgServer(pg_server.host, pg_server.port, pg_server.user, "postgres")
    admin.run(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    own = PgServer(pg_server.host, pg_server.port, pg_server.user, name)
    own.run(*SCHEMA)
    yield Backend(
        "postgres", database_config(name="pg", type="postgresql", dsn=own.dsn, pool_size=2)
    )
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mysql(mysql_server: MySQLServer) -> Iterator[Backend]:
    name = f"{mysql_server.database}_safety"

    def admin(*sql: str) -> None:
        async def go() -> None:
            conn = await asyncmy.connect(
                host=mysql_server.host,
                port=mysql_server.port,
                user=mysql_server.user,
                password=mysql_server.password,
                autocommit=True,
            )
            try:
                async with conn.cursor() as cur:
                    for s in sql:
                        await cur.execute(s)
            finally:
                conn.close()

        asyncio.run(go())

    admin(f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}`")
    own = MySQLServer(
        mysql_server.host, mysql_server.port, mysql_server.user, mysql_server.password, name
    )
    own.run(*SCHEMA)
    yield Backend(
        "mysql",
        database_config(
            name="my",
            type="mysql",
            host=own.host,
            port=own.port,
            user=own.user,
            password=own.password or None,
            database=name,
            pool_size=2,
        ),
    )
    admin(f"DROP DATABASE IF EXISTS `{name}`")


def _sqlite(tmp: Path) -> Iterator[Backend]:
    path = tmp / "safety.sqlite"
    con = sqlite3.connect(path)
    for sql in SCHEMA:
        con.execute(sql)
    con.commit()
    con.close()
    yield Backend("sqlite", database_config(name="lite", type="sqlite", path=str(path)))


def _duckdb(tmp: Path) -> Iterator[Backend]:
    path = tmp / "safety.duckdb"
    con = duckdb.connect(str(path))
    for sql in SCHEMA:
        con.execute(sql)
    con.close()
    yield Backend("duckdb", database_config(name="duck", type="duckdb", path=str(path)))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("duckdb", marks=pytest.mark.duckdb),
    ],
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    dialect: str = request.param
    makers: dict[str, Callable[[], Iterator[Backend]]] = {
        "postgres": lambda: _pg(request.getfixturevalue("pg_server")),
        "mysql": lambda: _mysql(request.getfixturevalue("mysql_server")),
        "sqlite": lambda: _sqlite(tmp_path_factory.mktemp("safety_sqlite")),
        "duckdb": lambda: _duckdb(tmp_path_factory.mktemp("safety_duckdb")),
    }
    yield from makers[dialect]()


@pytest.fixture
async def connector(backend: Backend) -> AsyncIterator[Connector]:
    conn = registry.create(backend.db)
    await conn.open()
    try:
        yield conn
    finally:
        await conn.close()


def safety_config(backend: Backend) -> Config:
    """The corpus policy over this backend's real database."""
    db = backend.db
    fields = {
        k: v
        for k in ("host", "port", "user", "database", "dsn", "path")
        if (v := getattr(db, k, None)) is not None
    }
    inline = ", ".join(
        f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in fields.items()
    )
    return load_config_text(f"""
databases:
  - {{name: {db.name}, type: {db.type}, {inline}}}
safety:
  max_rows_per_query: 100
permissions:
  default:
    {db.name}:{TABLES_POLICY}
""")


async def rows_of(conn: Connector, sql: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    async for batch in conn.stream(Statement(sql, timeout=30)):
        assert batch.rows is not None
        out += batch.rows
    return out


async def snapshot(conn: Connector, dialect: str) -> dict[str, Any]:
    tables = sorted(str(r[0]).lower() for r in await rows_of(conn, TABLE_LIST[dialect]))
    counts = {t: (await rows_of(conn, f"SELECT count(*) FROM {t}"))[0][0] for t in TABLES}
    secret = await rows_of(conn, "SELECT token FROM secrets")
    return {"tables": tables, "counts": counts, "secret": secret}


def _check(config: Config, backend: Backend, entry: dict[str, Any]):  # type: ignore[no-untyped-def]
    database, _ = DATABASES[backend.dialect]
    step = Step(database=database, table=entry["table"], query=entry["query"])
    return check(CheckRequest(steps=[step]), config)


async def execute(conn: Connector, outcome: Any) -> list[Any]:
    """Run exactly what the pipeline let through, the way the engine does."""
    results = []
    for step in outcome.steps:
        statement = to_statement(step)
        if step.readonly:
            rows: list[Any] = []
            async for batch in conn.stream(statement):
                rows += batch.rows or []
            results.append(rows)
        else:
            results.append(await conn.execute_write(statement))
    return results


async def test_hostile_corpus_never_runs(backend: Backend, connector: Connector) -> None:
    config = safety_config(backend)
    before = await snapshot(connector, backend.dialect)
    assert set(before["tables"]) >= set(TABLES)
    hostile = [e for e in load_corpus("hostile_sql.yaml") if backend.dialect in e["dialects"]]
    assert len(hostile) > 40
    for entry in hostile:
        outcome = _check(config, backend, entry)
        assert outcome.block is not None, entry
        assert outcome.block.stage == entry["expect_stage"], (entry, outcome.block)
        assert await execute(connector, outcome) == []
    assert await snapshot(connector, backend.dialect) == before


async def test_benign_corpus_runs_after_rewriting(backend: Backend, connector: Connector) -> None:
    config = safety_config(backend)
    benign = [e for e in load_corpus("benign_sql.yaml") if backend.dialect in e["dialects"]]
    failures = []
    for entry in benign:
        outcome = _check(config, backend, entry)
        assert outcome.block is None, (entry, outcome.block)
        try:
            (result,) = await execute(connector, outcome)
        except Exception as exc:  # collect every failure, then report them together
            failures.append(f"{entry['query']!r} -> {outcome.steps[0].text!r}: {exc}")
            continue
        step = outcome.steps[0]
        if step.row_cap is not None:
            assert len(result) <= step.row_cap + 1, (entry, len(result))
    assert not failures, "\n".join(failures)


async def test_row_cap_fetches_cap_plus_one(backend: Backend, connector: Connector) -> None:
    config = safety_config(backend)
    entry = {"table": "items", "query": "SELECT id FROM items ORDER BY id"}
    outcome = _check(config, backend, entry)
    (rows,) = await execute(connector, outcome)
    assert len(rows) == 101 and outcome.steps[0].row_cap == 100  # truncation is detectable
    union = {
        "table": "items",
        "query": "SELECT id FROM items UNION ALL SELECT id FROM items ORDER BY id",
    }
    (rows,) = await execute(connector, _check(config, backend, union))
    assert len(rows) == 101
