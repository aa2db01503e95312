"""Real databases for the engine tests, all holding the same generated rows, plus a plain
DuckDB "reference" holding them too: every federated result is compared with the same join
computed directly in DuckDB over the source rows.

- PostgreSQL (schema `eng`): customers, tickets
- MariaDB: eng_orders
- SQLite file: items
- DuckDB file: regions
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors import registry
from connectors.base import Connector
from connectors.registry import database_config
from engine.federated import FederatedResult, run_federated
from engine.ir import FederatedQuery
from engine.results import DiskResultStore, ResultStore
from engine.sink import Sink
from safety.config import SafetyConfig
from safety.types import CheckedStep
from tests.engine.support import Data, checked, checked_plan, generate, values_sql
from tests.servers import MySQLServer, PgServer

Run = Callable[..., Any]


@pytest.fixture(scope="session")
def data() -> Data:
    return generate()


@pytest.fixture(scope="session")
def pg_data(pg_server: PgServer, data: Data) -> PgServer:
    pg_server.run(
        "DROP SCHEMA IF EXISTS eng CASCADE",
        "CREATE SCHEMA eng",
        """CREATE TABLE eng.customers (id bigint PRIMARY KEY, name text, region text,
           balance numeric(12,2), created timestamptz, uid uuid, meta jsonb)""",
        f"INSERT INTO eng.customers VALUES {values_sql(data.customers)}",
        """CREATE TABLE eng.tickets (id bigint PRIMARY KEY, customer_uid uuid,
           opened timestamptz, body jsonb)""",
        f"INSERT INTO eng.tickets VALUES {values_sql(data.tickets)}",
        "ANALYZE",
    )
    return pg_server


@pytest.fixture(scope="session")
def mysql_data(mysql_server: MySQLServer, data: Data) -> MySQLServer:
    mysql_server.run(
        "DROP TABLE IF EXISTS eng_orders",
        """CREATE TABLE eng_orders (id BIGINT PRIMARY KEY, customer_id BIGINT NULL,
           amount DECIMAL(12,2) NOT NULL, placed DATETIME NOT NULL, KEY (customer_id))""",
        f"INSERT INTO eng_orders VALUES {values_sql(data.orders)}",
    )
    return mysql_server


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory, data: Data) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("engine_dbs")
    sqlite_path = folder / "items.sqlite"
    con = sqlite3.connect(sqlite_path)
    con.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, qty INTEGER)"
    )
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", data.items)
    con.commit()
    con.close()
    duck_path = folder / "regions.duckdb"
    dcon = duckdb.connect(str(duck_path))
    dcon.execute("CREATE TABLE regions (region VARCHAR, rate DOUBLE)")
    dcon.executemany("INSERT INTO regions VALUES (?, ?)", data.regions)
    dcon.close()
    return {"sqlite": sqlite_path, "duckdb": duck_path}


@pytest.fixture(scope="session")
def reference(data: Data) -> Iterator[duckdb.DuckDBPyConnection]:
    """The same rows in a plain DuckDB, where the expected joins are computed."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE customers (id BIGINT, name VARCHAR, region VARCHAR,
                   balance DECIMAL(12,2), created TIMESTAMPTZ, uid UUID, meta JSON)""")
    con.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*r[:5], str(r[5]), json.dumps(r[6])) for r in data.customers],
    )
    con.execute(
        "CREATE TABLE orders (id BIGINT, customer_id BIGINT, amount DECIMAL(12,2), "
        "placed TIMESTAMP)"
    )
    con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", data.orders)
    con.execute("CREATE TABLE items (id BIGINT, order_id BIGINT, sku VARCHAR, qty BIGINT)")
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", data.items)
    con.execute("CREATE TABLE regions (region VARCHAR, rate DOUBLE)")
    con.executemany("INSERT INTO regions VALUES (?, ?)", data.regions)
    con.execute(
        "CREATE TABLE tickets (id BIGINT, customer_uid UUID, opened TIMESTAMPTZ, body JSON)"
    )
    con.executemany(
        "INSERT INTO tickets VALUES (?, ?, ?, ?)",
        [(r[0], str(r[1]), r[2], json.dumps(r[3])) for r in data.tickets],
    )
    yield con
    con.close()


@pytest.fixture
async def connectors(
    pg_data: PgServer, mysql_data: MySQLServer, files: dict[str, Path]
) -> AsyncIterator[dict[str, Connector]]:
    configs = [
        database_config(name="pg", type="postgresql", dsn=pg_data.dsn, pool_size=8),
        database_config(
            name="my",
            type="mysql",
            host=mysql_data.host,
            port=mysql_data.port,
            user=mysql_data.user,
            password=mysql_data.password or None,
            database=mysql_data.database,
            pool_size=8,
        ),
        database_config(name="lite", type="sqlite", path=str(files["sqlite"])),
        database_config(name="duck", type="duckdb", path=str(files["duckdb"])),
    ]
    opened: dict[str, Connector] = {}
    try:
        for cfg in configs:
            conn = registry.create(cfg)
            await conn.open()
            opened[cfg.name] = conn
        yield opened
    finally:
        for conn in opened.values():
            await conn.close()


@pytest.fixture(scope="session")
def sink() -> Iterator[Sink]:
    s = Sink(threads=2, memory_limit="1GB")
    yield s
    s.close()


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return DiskResultStore(tmp_path / "results")


@pytest.fixture
def run(connectors: dict[str, Connector], sink: Sink, store: ResultStore) -> Run:
    """run(query_dict, **kwargs) -> FederatedResult, with the tests' defaults."""
    import msgspec

    counter = iter(range(1_000_000))

    async def go(
        query: Mapping[str, Any] | FederatedQuery,
        *,
        checked_steps: Mapping[str, CheckedStep] | None = None,
        safety: SafetyConfig | None = None,
        conns: Mapping[str, Connector] | None = None,
        check_schemas: bool = True,
        **kwargs: Any,
    ) -> FederatedResult:
        q = query if isinstance(query, FederatedQuery) else msgspec.convert(query, FederatedQuery)
        result = await run_federated(
            checked_plan(q, checked_steps or checked(q), conns or connectors),
            conns or connectors,
            sink=sink,
            store=store,
            safety=safety or SafetyConfig(),
            request_id=f"req_{next(counter):012x}",
            **kwargs,
        )
        if check_schemas:  # (concurrent requests check at the end instead)
            assert sink.schemas() == [], "the request's schema must be dropped"
        return result

    return go
