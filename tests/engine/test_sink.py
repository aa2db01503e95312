"""The DuckDB sink: locked down, typed from the connector's columns, bulk appends, no row lost."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator

import anyio
import duckdb
import pyarrow as pa
import pytest

from connectors.base import Batch, Column
from engine.sink import FLUSH_ROWS, RequestTables, Sink


@pytest.fixture(scope="module")
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def tables(sink: Sink) -> AsyncIterator[RequestTables]:
    t = await sink.open_request("req_test")
    yield t
    await t.drop()
    assert t.schema not in sink.schemas()


async def write(tables: RequestTables, messages: list[tuple[str, Batch | None]]) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[str, Batch | None]](2)
    async with anyio.create_task_group() as tg:
        await tg.start(tables.serve, receive)
        async with send:
            for m in messages:
                await send.send(m)


def test_locked_down(sink: Sink) -> None:
    cur = sink.cursor()
    with pytest.raises(duckdb.Error, match="disabled"):
        cur.execute("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.Error, match="locked"):
        cur.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.Error):
        cur.execute("INSTALL httpfs")


async def test_types_follow_the_declared_columns(tables: RequestTables) -> None:
    cols = [
        Column("id", "BIGINT"),
        Column("amount", "DECIMAL(12,2)"),
        Column("at", "TIMESTAMPTZ"),
        Column("u", "UUID"),
        Column("doc", "JSON"),
        Column("raw", "BLOB"),
        Column("day", "DATE"),
        Column("id", "VARCHAR"),
        Column("n", "HUGEINT"),
    ]
    u = uuid.uuid4()
    at = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    row = (
        7,
        decimal.Decimal("12.50"),
        at,
        u,
        {"k": [1, 2]},
        b"\x00\xff",
        "2024-02-03",
        "dup",
        2**70,
    )
    await write(tables, [("s0", Batch(cols, rows=[row])), ("s0", None)])
    described = dict(
        tables.cursor.execute(
            f"SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{tables.schema}' AND table_name = 's0'"
        ).fetchall()
    )
    assert described == {
        "id": "BIGINT",
        "amount": "DECIMAL(12,2)",
        "at": "TIMESTAMP WITH TIME ZONE",
        "u": "UUID",
        "doc": "JSON",
        "raw": "BLOB",
        "day": "DATE",
        "id_2": "VARCHAR",
        "n": "HUGEINT",
    }
    got = tables.cursor.sql(
        f"SELECT id, amount, \"at\" = TIMESTAMPTZ '2024-05-01 10:00:00+00', "
        f"u::VARCHAR, doc->>'$.k[1]', raw, day, id_2, n::VARCHAR "
        f"FROM {tables.table_name('s0')}"
    ).fetchall()
    assert got == [
        (
            7,
            decimal.Decimal("12.50"),
            True,
            str(u),
            "2",
            b"\x00\xff",
            dt.date(2024, 2, 3),
            "dup",
            str(2**70),
        )
    ]


async def test_new_columns_in_later_batches_are_kept(tables: RequestTables) -> None:
    await write(
        tables,
        [
            ("m", Batch([Column("_id", "VARCHAR"), Column("a", "BIGINT")], rows=[("x", 1)])),
            ("m", Batch([Column("_id", "VARCHAR"), Column("b", "VARCHAR")], rows=[("y", "z")])),
            ("m", None),
        ],
    )
    rows = tables.cursor.sql(
        f"SELECT _id, a, b FROM {tables.table_name('m')} ORDER BY _id"
    ).fetchall()
    assert rows == [("x", 1, None), ("y", None, "z")]


async def test_types_guessed_by_an_empty_batch_yield_to_real_rows(
    tables: RequestTables,
) -> None:
    """A link batch that matched nothing may guess VARCHAR for a projected column; the rows
    that follow carry the real type, and the merge must see numbers, not text."""
    await write(
        tables,
        [
            ("m", Batch([Column("k", "VARCHAR"), Column("n", "VARCHAR")], rows=[])),
            ("m", Batch([Column("k", "BIGINT"), Column("n", "DOUBLE")], rows=[(1, 1.5), (2, 2)])),
            ("m", Batch([Column("k", "VARCHAR")], rows=[])),
            ("m", None),
        ],
    )
    name = tables.table_name("m")
    types = tables.cursor.sql(f"SELECT column_name, column_type FROM (DESCRIBE {name})").fetchall()
    assert types == [("k", "BIGINT"), ("n", "DOUBLE")]
    assert tables.cursor.sql(f"SELECT sum(k), sum(n) FROM {name}").fetchall() == [(3, 3.5)]


async def test_an_empty_batch_without_columns_creates_nothing(tables: RequestTables) -> None:
    """A linked document-store batch that matched nothing may know no columns at all; the
    table comes from the batches that do (a table of no columns is not valid DuckDB)."""
    await write(
        tables,
        [
            ("m", Batch([], rows=[])),
            ("m", Batch([Column("k", "BIGINT")], rows=[(1,), (2,)])),
            ("m", Batch([], rows=[])),
            ("m", None),
        ],
    )
    name = tables.table_name("m")
    assert tables.cursor.sql(f"SELECT sum(k) FROM {name}").fetchall() == [(3,)]


async def test_bulk_appends_lose_nothing(tables: RequestTables) -> None:
    cols = [Column("k", "BIGINT"), Column("v", "DOUBLE")]
    messages: list[tuple[str, Batch | None]] = []
    n_rows = 0
    for start in range(0, 200_000, 1_000):  # 200 row batches and 0 arrow batches alternate
        if start % 2_000 == 0:
            rows = [(k, k / 2) for k in range(start, start + 1_000)]
            messages.append(("big", Batch(cols, rows=rows)))
        else:
            rb = pa.record_batch(
                {
                    "k": pa.array(range(start, start + 1_000), pa.int64()),
                    "v": pa.array([k / 2 for k in range(start, start + 1_000)]),
                }
            )
            messages.append(("big", Batch(cols, arrow=rb)))
        n_rows += 1_000
    messages.append(("big", None))
    before = tables.flushes
    await write(tables, messages)
    assert await tables.count("big") == n_rows
    total = tables.cursor.sql(f"SELECT sum(k) FROM {tables.table_name('big')}").fetchall()[0]
    assert total == (sum(range(n_rows)),)
    # appended in bulk: a handful of appends per schema switch group, never one per batch
    assert tables.flushes - before <= 2 * (n_rows // FLUSH_ROWS + 1) + 1


async def test_empty_step_table_has_its_columns(tables: RequestTables) -> None:
    await tables.create_empty("e", [Column("id", "INTEGER"), Column("name", "VARCHAR")])
    assert tables.cursor.sql(f"SELECT * FROM {tables.table_name('e')}").columns == ["id", "name"]
    assert await tables.count("e") == 0
