"""One fixture builds every SQL connector against its real database with the same tables.

`backend` is parametrized over the four connectors, each param marked with its name
(`pytest -m postgres` runs one). Flags on `Backend` declare each database's differences
(ibis's TestConf idea) so the shared tests in test_conformance.py stay one body.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors import registry
from connectors.base import Connector
from connectors.config import DatabaseConfig
from connectors.registry import database_config
from tests.plugins import toy

N_ROWS = 40  # ids 1..40 with values, id 0 all NULL


def item(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "big": 10**12 + i,
        "amount": Decimal(f"{i * 37}.{i % 100:02d}"),
        "name": f"name {i} é'",
        "flag": i % 2 == 0,
        "day": dt.date(2024, 1, 1) + dt.timedelta(days=i),
        "seen_at": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC) + dt.timedelta(hours=i),
        "doc": {"k": i, "tags": ["a", "b"]},
        "raw": bytes([i, 0, 255]),
        "uid": uuid.UUID(int=i + 1),
    }


COLUMNS = list(item(1))
EXPECTED = [{"id": 0, **dict.fromkeys(COLUMNS[1:])}] + [item(i) for i in range(1, N_ROWS + 1)]


def _lit(kind: str, col: str, v: Any) -> str:
    if v is None:
        return "NULL"
    if col in ("id", "big"):
        return str(v)
    if col == "amount":
        return f"'{v}'" if kind != "mysql" else str(v)
    if col == "flag":
        return ("TRUE" if v else "FALSE") if kind in ("postgresql", "duckdb") else str(int(v))
    if col == "raw":
        return {"postgresql": f"'\\x{v.hex()}'::bytea", "duckdb": f"unhex('{v.hex()}')"}.get(
            kind, f"X'{v.hex()}'"
        )
    if col == "seen_at":
        return f"'{v.strftime('%Y-%m-%d %H:%M:%S')}'" if kind == "mysql" else f"'{v.isoformat()}'"
    if col == "doc":
        return f"'{json.dumps(v)}'"
    if col == "name":
        return "'" + v.replace("'", "''") + "'"
    return f"'{v}'"


DDL = {
    "postgresql": [
        "CREATE TABLE items (id integer PRIMARY KEY, big bigint, amount numeric(12,2), "
        "name text, flag boolean, day date, seen_at timestamptz, doc jsonb, raw bytea, uid uuid)",
        "CREATE TABLE owners (id integer PRIMARY KEY, item_id integer REFERENCES items(id), "
        "label text)",
        "CREATE TABLE scratch (id integer PRIMARY KEY, v text)",
    ],
    "mysql": [
        "CREATE TABLE items (id INT PRIMARY KEY, big BIGINT, amount DECIMAL(12,2), "
        "name VARCHAR(100), flag TINYINT(1), day DATE, seen_at TIMESTAMP NULL, doc JSON, "
        "raw BLOB, uid UUID, KEY items_big (big)) ENGINE=InnoDB",
        "CREATE TABLE owners (id INT PRIMARY KEY, item_id INT, label TEXT, "
        "FOREIGN KEY (item_id) REFERENCES items(id)) ENGINE=InnoDB",
        "CREATE TABLE scratch (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB",
    ],
    "sqlite": [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, big BIGINT, amount DECIMAL(12,2), "
        "name TEXT, flag BOOLEAN, day DATE, seen_at TIMESTAMPTZ, doc JSON, raw BLOB, uid UUID)",
        "CREATE TABLE owners (id INTEGER PRIMARY KEY, item_id INTEGER REFERENCES items(id), "
        "label TEXT)",
        "CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT)",
    ],
    "duckdb": [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, big BIGINT, amount DECIMAL(12,2), "
        "name VARCHAR, flag BOOLEAN, day DATE, seen_at TIMESTAMPTZ, doc JSON, raw BLOB, uid UUID)",
        "CREATE TABLE owners (id INTEGER PRIMARY KEY, item_id INTEGER REFERENCES items(id), "
        "label VARCHAR)",
        "CREATE TABLE scratch (id INTEGER PRIMARY KEY, v VARCHAR)",
    ],
}

# A statement that runs until it is stopped (or for 30 s on the servers).
LONG_QUERY = {
    "postgresql": "SELECT pg_sleep(30)",
    "mysql": "SELECT SLEEP(30)",
    "sqlite": "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
    "SELECT count(*) FROM r",
    "duckdb": "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = 7",
}


def seed_sql(kind: str) -> list[str]:
    rows = ", ".join("(" + ", ".join(_lit(kind, c, r[c]) for c in COLUMNS) + ")" for r in EXPECTED)
    return [
        *DDL[kind],
        f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES {rows}",
        "INSERT INTO owners VALUES (1, 1, 'first'), (2, 2, 'second'), (3, NULL, 'none')",
    ]


@dataclass
class Backend:
    kind: str
    config: DatabaseConfig
    run: Callable[[str], list[Any]]
    # MariaDB sends JSON and UUID columns as plain text (see connectors/mysql.py)
    json_as_text: bool = False
    uuid_as_text: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def normalize(self, row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        if self.json_as_text and isinstance(out.get("doc"), str):
            out["doc"] = json.loads(out["doc"])
        if self.uuid_as_text and isinstance(out.get("uid"), str):
            out["uid"] = uuid.UUID(out["uid"])
        return out


def _pg_backend(pg_server: Any) -> Backend:
    pg_server.run(
        "DROP SCHEMA public CASCADE", "CREATE SCHEMA public", *seed_sql("postgresql"), "ANALYZE"
    )
    config = database_config(name="pg", type="postgresql", dsn=pg_server.dsn, pool_size=3)
    return Backend("postgresql", config, lambda sql: pg_server.run(sql))


def _mysql_backend(mysql_server: Any) -> Backend:
    mysql_server.run(
        "SET FOREIGN_KEY_CHECKS = 0",
        "DROP TABLE IF EXISTS owners, items, scratch",
        "SET FOREIGN_KEY_CHECKS = 1",
        "SET time_zone = '+00:00'",
        *seed_sql("mysql"),
        "ANALYZE TABLE items, owners",
    )
    config = database_config(
        name="maria",
        type="mysql",
        host=mysql_server.host,
        port=mysql_server.port,
        user=mysql_server.user,
        password=mysql_server.password or None,
        database=mysql_server.database,
        pool_size=3,
    )
    return Backend(
        "mysql", config, lambda sql: mysql_server.run(sql), json_as_text=True, uuid_as_text=True
    )


def _sqlite_backend(tmp: Path, kind: str = "sqlite") -> Backend:
    path = tmp / "conformance.sqlite"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    for sql in seed_sql("sqlite"):
        con.execute(sql)
    con.commit()
    con.close()

    def run(sql: str) -> list[Any]:
        c = sqlite3.connect(path)
        try:
            rows = c.execute(sql).fetchall()
            c.commit()
            return rows
        finally:
            c.close()

    return Backend(kind, database_config(name="lite", type=kind, path=str(path)), run)


def _duckdb_backend(tmp: Path, connectors: list[Any]) -> Backend:
    path = tmp / "conformance.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    for sql in seed_sql("duckdb"):
        con.execute(sql)
    con.close()

    def run(sql: str) -> list[Any]:
        # the connector holds the file read-only in this process: read through the same config
        c = duckdb.connect(str(path), read_only=True)
        try:
            return c.execute(sql).fetchall()
        finally:
            c.close()

    return Backend("duckdb", database_config(name="duck", type="duckdb", path=str(path)), run)


KINDS = [
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("duckdb", marks=pytest.mark.duckdb, id="duckdb"),
    # a plugin defined only under tests/ (tests/plugins/toy.py), registered by the fixture
    pytest.param(toy.TYPE, marks=pytest.mark.sqlite, id=toy.TYPE),
]
LONG_QUERY[toy.TYPE] = LONG_QUERY["sqlite"]


@pytest.fixture
def toy_plugin() -> Iterator[None]:
    with toy.installed():
        yield


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A freshly seeded database of one kind (tables items, owners, scratch)."""
    kind = request.param
    if kind == "postgresql":
        return _pg_backend(request.getfixturevalue("pg_server"))
    if kind == "mysql":
        return _mysql_backend(request.getfixturevalue("mysql_server"))
    if kind == "sqlite":
        return _sqlite_backend(tmp_path)
    if kind == toy.TYPE:
        request.getfixturevalue("toy_plugin")
        return _sqlite_backend(tmp_path, toy.TYPE)
    return _duckdb_backend(tmp_path, [])


@pytest.fixture
async def connector(backend: Backend) -> AsyncIterator[Connector]:
    conn = registry.create(backend.config)
    await conn.open()
    try:
        yield conn
    finally:
        await conn.close()
