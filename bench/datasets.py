"""Load the benchmark dataset into PostgreSQL, MariaDB, SQLite and DuckDB.

    python -m bench.datasets --scale 1000000 [--only pg,mysql,sqlite,duckdb] [--events N]

Idempotent: each target keeps a `bench_meta` table with the spec it holds; the same spec
again does nothing, a different one rebuilds every table. The spec row is written last, so
an interrupted load is rebuilt next time. Each target loads the fastest way its driver
allows: PostgreSQL by COPY (CSV streamed from Arrow), MariaDB by LOAD DATA LOCAL INFILE
(asyncmy supports it with local_infile=True), DuckDB from Arrow tables, SQLite by
executemany in one transaction. Secondary indexes are built after the rows are in.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from bench import datagen
from bench.datagen import TABLES, Spec

DATA_DIR = Path(__file__).resolve().parent / ".data"
TARGETS = ("pg", "mysql", "sqlite", "duckdb")
INDEXED = {"events": ("user_id", "order_id"), "orders": ("user_id",)}

_PG_TYPES = {"int64": "bigint", "string": "text", "decimal": "numeric(12,2)", "ts": "timestamptz"}
_MY_TYPES = {
    "int64": "BIGINT",
    "string": "VARCHAR(64)",
    "decimal": "DECIMAL(12,2)",
    "ts": "DATETIME",
}
_LITE_TYPES = {"int64": "INTEGER", "string": "TEXT", "decimal": "REAL", "ts": "TIMESTAMP"}
_DUCK_TYPES = {
    "int64": "BIGINT",
    "string": "VARCHAR",
    "decimal": "DECIMAL(12,2)",
    "ts": "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class Targets:
    """Where the dataset goes; the defaults are the local benchmark servers."""

    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    pg_database: str = "sluice_bench"
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_user: str = "root"
    mysql_password: str = ""
    mysql_database: str = "sluice_bench"
    data_dir: Path = DATA_DIR

    @property
    def pg_dsn(self) -> str:
        base = self.pg_admin_dsn.rsplit("/", 1)[0]
        return f"{base}/{self.pg_database}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "bench.sqlite"

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "bench.duckdb"

    def mysql_kwargs(self, database: str | None = None) -> dict[str, Any]:
        return {
            "host": self.mysql_host,
            "port": self.mysql_port,
            "user": self.mysql_user,
            "password": self.mysql_password,
            "database": database,
            "autocommit": True,
        }


@dataclass
class LoadReport:
    target: str
    skipped: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.target}: already at this spec, nothing to do"
        parts = ", ".join(f"{t} {s:.2f}s" for t, s in self.seconds.items())
        return f"{self.target}: {parts}"


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_timestamp(t):
        return "ts"
    return "string"


def create_table_sql(
    table: str, types: dict[str, str], *, primary_key: bool, quote: str = '"'
) -> str:
    cols = [
        f"{quote}{f.name}{quote} {types[_kind(f.type)]} NOT NULL" for f in datagen.SCHEMAS[table]
    ]
    if primary_key:
        cols.append("PRIMARY KEY (id)")
    return f"CREATE TABLE {table} ({', '.join(cols)})"


def _spec_json(spec: Spec) -> str:
    return json.dumps(spec.as_dict(), sort_keys=True)


def _csv_bytes(tbl: pa.Table) -> bytes:
    buf = io.BytesIO()
    # no header: a stream of chunks is one CSV document to COPY
    pacsv.write_csv(datagen.as_text_timestamps(tbl), buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


async def _prefetched(make: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Produce the next chunk in a worker thread while the database consumes this one."""
    nxt: Callable[[], bytes | None] = lambda: next(make, None)  # noqa: E731
    pending = asyncio.ensure_future(asyncio.to_thread(nxt))
    while (data := await pending) is not None:
        pending = asyncio.ensure_future(asyncio.to_thread(nxt))
        yield data


def _csv_chunks(spec: Spec, table: str) -> Iterator[bytes]:
    for chunk in datagen.chunks(spec, table):
        yield _csv_bytes(chunk)


# --- PostgreSQL -------------------------------------------------------------------------


async def _pg_connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn,
        server_settings={
            "timezone": "UTC",
            "maintenance_work_mem": "512MB",
            "synchronous_commit": "off",
        },
    )


async def pg_stored_spec(conn: asyncpg.Connection) -> str | None:
    if await conn.fetchval("SELECT to_regclass('bench_meta')") is None:
        return None
    return await conn.fetchval("SELECT value FROM bench_meta WHERE key = 'spec'")


async def load_pg(spec: Spec, targets: Targets) -> LoadReport:
    admin = await asyncpg.connect(targets.pg_admin_dsn)
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", targets.pg_database
        )
        if not exists:
            await admin.execute(f'CREATE DATABASE "{targets.pg_database}"')
    finally:
        await admin.close()

    conn = await _pg_connect(targets.pg_dsn)
    report = LoadReport("pg", skipped=False)
    try:
        if await pg_stored_spec(conn) == _spec_json(spec):
            report.skipped = True
            return report
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text NOT NULL);"
            "DELETE FROM bench_meta WHERE key = 'spec'"
        )
        for table in TABLES:
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
                await conn.execute(create_table_sql(table, _PG_TYPES, primary_key=False))
                # FREEZE: the table was created in this transaction, so rows land frozen
                # and readers never pay for hint-bit writes or a first vacuum.
                await conn.copy_to_table(
                    table,
                    source=_prefetched(_csv_chunks(spec, table)),
                    format="csv",
                    freeze=True,
                )
                await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
                for col in INDEXED.get(table, ()):
                    await conn.execute(f"CREATE INDEX {table}_{col}_idx ON {table} ({col})")
            await conn.execute(f"ANALYZE {table}")
            report.seconds[table] = time.perf_counter() - start
        await conn.execute("INSERT INTO bench_meta VALUES ('spec', $1)", _spec_json(spec))
    finally:
        await conn.close()
    return report


# --- MariaDB / MySQL --------------------------------------------------------------------


async def mysql_stored_spec(cur: Any, database: str) -> str | None:
    await cur.execute(
        "SELECT COUNT(*) FROM information_schema.tables"
        " WHERE table_schema = %s AND table_name = 'bench_meta'",
        (database,),
    )
    if (await cur.fetchone())[0] == 0:
        return None
    await cur.execute("SELECT value FROM bench_meta WHERE `key` = 'spec'")
    row = await cur.fetchone()
    return row[0] if row else None


def _allow_local_infile() -> None:
    """asyncmy 0.2.18 accepts local_infile=True but hands the file name to its sender as
    bytes, which the sender's typed `str` argument rejects; decode it first."""
    import asyncmy.connection as myconn

    base = myconn.LoadLocalFile
    if getattr(base, "_bench_decodes", False):
        return

    class DecodingLoadLocalFile(base):  # type: ignore[misc, valid-type]
        _bench_decodes = True

        def __init__(self, filename: str | bytes, connection: Any) -> None:
            if isinstance(filename, bytes):
                filename = filename.decode()
            super().__init__(filename, connection)

    myconn.LoadLocalFile = DecodingLoadLocalFile


async def load_mysql(spec: Spec, targets: Targets) -> LoadReport:
    _allow_local_infile()
    db = targets.mysql_database
    tmp_dir = targets.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    conn = await asyncmy.connect(**targets.mysql_kwargs(), local_infile=True)
    report = LoadReport("mysql", skipped=False)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
            await cur.execute(f"USE `{db}`")
            if await mysql_stored_spec(cur, db) == _spec_json(spec):
                report.skipped = True
                return report
            await cur.execute(
                "CREATE TABLE IF NOT EXISTS bench_meta (`key` VARCHAR(64) PRIMARY KEY,"
                " value TEXT NOT NULL)"
            )
            await cur.execute("DELETE FROM bench_meta WHERE `key` = 'spec'")
            await cur.execute(
                "SET SESSION unique_checks = 0, foreign_key_checks = 0, time_zone = '+00:00'"
            )
            for table in TABLES:
                start = time.perf_counter()
                await cur.execute(f"DROP TABLE IF EXISTS `{table}`")
                await cur.execute(
                    create_table_sql(table, _MY_TYPES, primary_key=True, quote="`")
                    + " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
                cols = ", ".join(f"`{f.name}`" for f in datagen.SCHEMAS[table])
                path = tmp_dir / f"{db}.{table}.{os.getpid()}.csv"
                try:
                    async for data in _prefetched(_csv_chunks(spec, table)):
                        path.write_bytes(data)
                        await cur.execute(
                            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}`"
                            " CHARACTER SET utf8mb4 FIELDS TERMINATED BY ','"
                            " OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n'"
                            f" ({cols})"
                        )
                finally:
                    path.unlink(missing_ok=True)
                idx = INDEXED.get(table, ())
                if idx:
                    adds = ", ".join(f"ADD INDEX {table}_{c}_idx (`{c}`)" for c in idx)
                    await cur.execute(f"ALTER TABLE `{table}` {adds}")
                await cur.execute(f"ANALYZE TABLE `{table}`")
                await cur.fetchall()
                report.seconds[table] = time.perf_counter() - start
            await cur.execute(
                "INSERT INTO bench_meta (`key`, value) VALUES ('spec', %s)", (_spec_json(spec),)
            )
    finally:
        conn.close()
    return report


# --- SQLite and DuckDB (files, rebuilt beside the old one and swapped in) ------------------


def sqlite_stored_spec(path: Path) -> str | None:
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'spec'").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def _sqlite_rows(tbl: pa.Table) -> Iterator[tuple[Any, ...]]:
    text = datagen.as_text_timestamps(tbl)
    cols = []
    for f, col in zip(text.schema, text.columns, strict=True):
        if pa.types.is_decimal(f.type):
            col = col.cast(pa.float64())
        cols.append(col.to_numpy(zero_copy_only=False).tolist())
    return zip(*cols, strict=True)


def load_sqlite(spec: Spec, targets: Targets) -> LoadReport:
    path = targets.sqlite_path
    report = LoadReport("sqlite", skipped=False)
    if sqlite_stored_spec(path) == _spec_json(spec):
        report.skipped = True
        return report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for table in TABLES:
            start = time.perf_counter()
            conn.execute(create_table_sql(table, _LITE_TYPES, primary_key=True))
            marks = ", ".join("?" * len(datagen.SCHEMAS[table]))
            for chunk in datagen.chunks(spec, table):
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", _sqlite_rows(chunk))
            for col in INDEXED.get(table, ()):
                conn.execute(f"CREATE INDEX {table}_{col}_idx ON {table} ({col})")
            report.seconds[table] = time.perf_counter() - start
        conn.execute("CREATE TABLE bench_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO bench_meta VALUES ('spec', ?)", (_spec_json(spec),))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    os.replace(tmp, path)
    return report


def duckdb_stored_spec(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'spec'").fetchone()
    except duckdb.CatalogException:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def load_duckdb(spec: Spec, targets: Targets) -> LoadReport:
    path = targets.duckdb_path
    report = LoadReport("duckdb", skipped=False)
    if duckdb_stored_spec(path) == _spec_json(spec):
        report.skipped = True
        return report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = duckdb.connect(str(tmp))
    try:
        conn.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            start = time.perf_counter()
            conn.execute(create_table_sql(table, _DUCK_TYPES, primary_key=True))
            for chunk in datagen.chunks(spec, table):
                conn.register("_chunk", chunk)
                conn.execute(f"INSERT INTO {table} SELECT * FROM _chunk")
                conn.unregister("_chunk")
            for col in INDEXED.get(table, ()):
                conn.execute(f"CREATE INDEX {table}_{col}_idx ON {table} ({col})")
            report.seconds[table] = time.perf_counter() - start
        conn.execute("CREATE TABLE bench_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        conn.execute("INSERT INTO bench_meta VALUES ('spec', ?)", [_spec_json(spec)])
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    os.replace(tmp, path)
    return report


# --- entry points -----------------------------------------------------------------------


async def load(
    spec: Spec, targets: Targets = Targets(), only: tuple[str, ...] = TARGETS
) -> list[LoadReport]:
    """Bring every chosen target to `spec`; returns what each did and how long it took."""
    unknown = set(only) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    reports = []
    for target in only:
        match target:
            case "pg":
                reports.append(await load_pg(spec, targets))
            case "mysql":
                reports.append(await load_mysql(spec, targets))
            case "sqlite":
                reports.append(await asyncio.to_thread(load_sqlite, spec, targets))
            case "duckdb":
                reports.append(await asyncio.to_thread(load_duckdb, spec, targets))
    return reports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.datasets", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--scale",
        type=int,
        required=True,
        help="events rows; orders = scale/10, users = scale/100 (at least 10)",
    )
    parser.add_argument("--events", type=int, default=None, help="events rows, overriding --scale")
    parser.add_argument(
        "--only", default=",".join(TARGETS), help="comma list of " + ",".join(TARGETS)
    )
    parser.add_argument("--seed", type=int, default=datagen.DEFAULT_SEED)
    parser.add_argument("--pg-admin-dsn", default=Targets.pg_admin_dsn)
    parser.add_argument(
        "--database", default="sluice_bench", help="PostgreSQL and MariaDB database name"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    # asyncmy logs every server note ("Unknown table" after DROP TABLE IF EXISTS)
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    spec = datagen.spec_for(args.scale, args.events, args.seed)
    targets = Targets(
        pg_admin_dsn=args.pg_admin_dsn,
        pg_database=args.database,
        mysql_database=args.database,
        data_dir=args.data_dir,
    )
    only = tuple(t.strip() for t in args.only.split(",") if t.strip())
    print(f"dataset: {spec.users} users, {spec.orders} orders, {spec.events} events")
    start = time.perf_counter()
    for report in asyncio.run(load(spec, targets, only)):
        print(report)
    print(f"total {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
