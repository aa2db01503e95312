"""The benchmark dataset generator: deterministic, idempotent, and what it loads is what it
generated, on the real PostgreSQL and MariaDB servers and in SQLite and DuckDB files."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import duckdb
import pytest

from bench import datagen
from bench.datasets import TARGETS, Targets, load
from tests.servers import MYSQL, bench_targets

COLUMNS = {t: [f.name for f in datagen.SCHEMAS[t]] for t in datagen.TABLES}


def _canon(value: Any) -> str:
    """One text form per value, whatever the driver returned."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):  # SQLite keeps NUMERIC(12,2) as REAL
        return f"{value:.2f}"
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


def _rows(records: Any) -> list[tuple[str, ...]]:
    return [tuple(_canon(v) for v in r) for r in records]


def expected(spec: datagen.Spec, table: str) -> list[tuple[str, ...]]:
    tbl = datagen.generate(spec, table)
    return _rows(zip(*(tbl.column(c).to_pylist() for c in COLUMNS[table]), strict=True))


async def read_all(targets: Targets) -> dict[str, dict[str, list[tuple[str, ...]]]]:
    """Every table of every target, rows in id order, in canonical text."""
    out: dict[str, dict[str, list[tuple[str, ...]]]] = {t: {} for t in TARGETS}
    pg = await asyncpg.connect(targets.pg_dsn)
    my = await asyncmy.connect(**MYSQL, database=targets.mysql_database)
    lite = sqlite3.connect(targets.sqlite_path)
    duck = duckdb.connect(str(targets.duckdb_path), read_only=True)
    try:
        for table in datagen.TABLES:
            sql = f"SELECT {', '.join(COLUMNS[table])} FROM {table} ORDER BY id"
            out["pg"][table] = _rows(await pg.fetch(sql))
            async with my.cursor() as cur:
                await cur.execute(sql)
                out["mysql"][table] = _rows(await cur.fetchall())
            out["sqlite"][table] = _rows(lite.execute(sql).fetchall())
            arrow = duck.sql(sql).to_arrow_table()
            cols = (arrow.column(c).to_pylist() for c in COLUMNS[table])
            out["duckdb"][table] = _rows(zip(*cols, strict=True))
    finally:
        await pg.close()
        my.close()
        lite.close()
        duck.close()
    return out


async def add_sentinel(targets: Targets) -> None:
    """A row the loader never writes: it survives only if a re-run really does nothing."""
    row = "(999999, 'sentinel', 's@x', 'ZZ', '2020-01-01 00:00:00')"
    pg = await asyncpg.connect(targets.pg_dsn)
    try:
        await pg.execute(f"INSERT INTO users VALUES {row}")
    finally:
        await pg.close()
    my = await asyncmy.connect(**MYSQL, database=targets.mysql_database, autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute(f"INSERT INTO users VALUES {row}")
    finally:
        my.close()
    with sqlite3.connect(targets.sqlite_path) as lite:
        lite.execute(f"INSERT INTO users VALUES {row}")
    lite.close()
    with duckdb.connect(str(targets.duckdb_path)) as duck:
        duck.execute(f"INSERT INTO users VALUES {row}")


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[Targets]:
    with bench_targets(tmp_path) as t:
        yield t


def test_generation_is_deterministic_and_seeded() -> None:
    spec = datagen.spec_for(1000)
    for table in datagen.TABLES:
        assert datagen.generate(spec, table).equals(datagen.generate(spec, table))
    other = datagen.spec_for(1000, seed=spec.seed + 1)
    assert not datagen.generate(spec, "events").equals(datagen.generate(other, "events"))
    events = datagen.generate(spec, "events")
    assert events.num_rows == 1000
    assert events.column("id").to_pylist() == list(range(1, 1001))
    # every event points at an existing order, and the first 10% of events at ~10% of them
    order_ids = events.column("order_id").to_pylist()
    assert min(order_ids) == 1 and max(order_ids) == spec.orders
    assert len(set(order_ids[:100])) == spec.orders // 10


async def test_load_is_faithful_idempotent_and_rebuilds_on_new_scale(targets: Targets) -> None:
    small = datagen.spec_for(100)
    first = await load(small, targets)
    assert [r.skipped for r in first] == [False] * len(TARGETS)

    loaded = await read_all(targets)
    for table in datagen.TABLES:
        want = expected(small, table)
        assert len(want) == small.rows(table)
        for target in TARGETS:
            assert loaded[target][table] == want, f"{target}.{table} differs from the generator"

    await add_sentinel(targets)
    again = await load(small, targets)
    assert [r.skipped for r in again] == [True] * len(TARGETS)
    after = await read_all(targets)
    for target in TARGETS:
        assert after[target]["users"][-1][:2] == ("999999", "sentinel"), target

    bigger = datagen.spec_for(200)
    rebuilt = await load(bigger, targets)
    assert [r.skipped for r in rebuilt] == [False] * len(TARGETS)
    grown = await read_all(targets)
    for target in TARGETS:
        assert len(grown[target]["events"]) == 200, target
        assert all(u[1] != "sentinel" for u in grown[target]["users"]), target

    await load(small, targets)
    assert await read_all(targets) == loaded
