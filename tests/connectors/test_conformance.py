"""The same behaviour from every SQL connector, against its real database."""

from __future__ import annotations

import json
import socket
import time
import uuid
from decimal import Decimal
from typing import Any

import anyio
import msgspec
import pytest

from connectors import registry
from connectors.base import Batch, Connector, LinkFilter, Statement
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.registry import database_config
from tests.connectors.conftest import COLUMNS, EXPECTED, LONG_QUERY, N_ROWS, Backend

SELECT_ALL = f"SELECT {', '.join(COLUMNS)} FROM items ORDER BY id"


async def collect(connector: Connector, statement: Statement) -> list[Batch]:
    return [b async for b in connector.stream(statement)]


def as_dicts(batches: list[Batch]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in batches:
        names = [c.name for c in b.columns]
        if b.rows is not None:
            out += [dict(zip(names, r, strict=True)) for r in b.rows]
        else:
            assert b.arrow is not None
            out += b.arrow.to_pylist()
    return out


async def count_items(connector: Connector, table: str = "items") -> int:
    rows = as_dicts(await collect(connector, Statement(f"SELECT count(*) AS n FROM {table}")))
    return int(rows[0]["n"])


async def test_stream_is_batched_and_complete(connector: Connector) -> None:
    batches = await collect(connector, Statement("SELECT id FROM items ORDER BY id", batch_size=7))
    assert all(0 < len(b) <= 7 for b in batches)
    assert len(batches) == -(-(N_ROWS + 1) // 7)
    assert [r["id"] for r in as_dicts(batches)] == list(range(N_ROWS + 1))


@pytest.mark.parametrize("bulk", [False, True], ids=["rows", "arrow"])
async def test_max_rows_stops_the_stream(connector: Connector, bulk: bool) -> None:
    batches = await collect(
        connector,
        Statement("SELECT id FROM items ORDER BY id", batch_size=4, max_rows=10, bulk=bulk),
    )
    assert all(len(b) <= 4 for b in batches)
    assert [r["id"] for r in as_dicts(batches)] == list(range(10))


async def test_small_result_in_one_batch(connector: Connector) -> None:
    batches = await collect(
        connector, Statement("SELECT id FROM items WHERE id = 3", batch_size=100, max_rows=101)
    )
    assert [as_dicts(batches)] == [[{"id": 3}]]


async def test_types_round_trip(connector: Connector, backend: Backend) -> None:
    batches = await collect(connector, Statement(SELECT_ALL))
    got = [backend.normalize(r) for r in as_dicts(batches)]
    assert got == EXPECTED
    types = {c.name: c.type for c in batches[0].columns}
    assert types["big"] == "BIGINT"
    assert types["amount"].startswith("DECIMAL(")
    assert types["seen_at"] == "TIMESTAMPTZ"
    assert types["day"] == "DATE"
    assert types["raw"] == "BLOB"
    assert types["flag"] == "BOOLEAN"
    assert isinstance(got[5]["amount"], Decimal)


async def test_bulk_gives_the_same_values_as_rows(connector: Connector, backend: Backend) -> None:
    rows = as_dicts(await collect(connector, Statement(SELECT_ALL, batch_size=16)))
    bulk = await collect(connector, Statement(SELECT_ALL, batch_size=16, bulk=True))
    assert all(b.arrow is not None and b.rows is None and len(b) <= 16 for b in bulk)
    arrow_rows = as_dicts(bulk)
    for r in arrow_rows:  # Arrow carries JSON as text
        if isinstance(r["doc"], str):
            r["doc"] = json.loads(r["doc"])
    assert [backend.normalize(r) for r in arrow_rows] == [backend.normalize(r) for r in rows]


async def test_duplicate_column_names_are_made_unique(connector: Connector) -> None:
    sql = "SELECT a.id, b.id, a.name FROM items a JOIN owners b ON a.id = b.item_id ORDER BY a.id"
    for bulk in (False, True):
        batches = await collect(connector, Statement(sql, bulk=bulk))
        assert [c.name for c in batches[0].columns] == ["id", "id_1", "name"]
        assert [(r["id"], r["id_1"]) for r in as_dicts(batches)] == [(1, 1), (2, 2)]


async def test_readonly_statement_cannot_write(connector: Connector) -> None:
    before = await count_items(connector, "scratch")
    with pytest.raises(QueryFailed):
        await collect(connector, Statement("INSERT INTO scratch (id, v) VALUES (1, 'x')"))
    assert await count_items(connector, "scratch") == before == 0


async def test_execute_write_commits_or_rolls_back(connector: Connector) -> None:
    n = await connector.execute_write(
        Statement("INSERT INTO scratch (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')", readonly=False)
    )
    assert n == 3
    assert await count_items(connector, "scratch") == 3
    assert (
        await connector.execute_write(
            Statement("UPDATE scratch SET v = 'z' WHERE id >= 2", readonly=False)
        )
        == 2
    )
    with pytest.raises(QueryFailed):  # a duplicate key: the whole statement is undone
        await connector.execute_write(
            Statement("INSERT INTO scratch (id, v) VALUES (10, 'new'), (1, 'dup')", readonly=False)
        )
    rows = as_dicts(await collect(connector, Statement("SELECT id, v FROM scratch ORDER BY id")))
    assert rows == [{"id": 1, "v": "a"}, {"id": 2, "v": "z"}, {"id": 3, "v": "z"}]


async def test_timeout_raises_and_stops(connector: Connector, backend: Backend) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimedOut):
        await collect(connector, Statement(LONG_QUERY[backend.kind], timeout=0.5))
    assert time.monotonic() - started < 5
    assert await count_items(connector) == N_ROWS + 1


async def test_cancellation_stops_the_query(connector: Connector, backend: Backend) -> None:
    started = time.monotonic()
    with anyio.move_on_after(0.3):
        await collect(connector, Statement(LONG_QUERY[backend.kind], timeout=60))
    assert time.monotonic() - started < 5
    assert await count_items(connector) == N_ROWS + 1


async def test_database_error_keeps_the_pool_usable(connector: Connector) -> None:
    with pytest.raises(QueryFailed) as info:
        await collect(connector, Statement("SELECT * FROM no_such_table"))
    assert "no_such_table" in str(info.value)
    assert not isinstance(info.value.__cause__, QueryFailed)
    for _ in range(4):  # more than the pool size
        assert await count_items(connector) == N_ROWS + 1


async def test_with_link_filters_with_bound_values(connector: Connector, backend: Backend) -> None:
    base = Statement(
        "SELECT i.id, i.name, i.uid, i.amount FROM items i WHERE i.id > 0", batch_size=5
    )
    ids = list(range(3, 30, 2)) + [None, 999]
    got = as_dicts(
        await collect(connector, connector.with_link(base, LinkFilter("id", ids, "BIGINT")))
    )
    assert sorted(r["id"] for r in got) == list(range(3, 30, 2))
    names = [f"name {i} é'" for i in (4, 8)] + ["nobody"]
    got = as_dicts(
        await collect(connector, connector.with_link(base, LinkFilter("name", names, "VARCHAR")))
    )
    assert sorted(r["id"] for r in got) == [4, 8]
    uids = (
        [uuid.UUID(int=6), uuid.UUID(int=11)]
        if not backend.uuid_as_text
        else [str(uuid.UUID(int=6)), str(uuid.UUID(int=11))]
    )
    got = as_dicts(
        await collect(connector, connector.with_link(base, LinkFilter("uid", uids, "UUID")))
    )
    assert sorted(r["id"] for r in got) == [5, 10]
    got = as_dicts(
        await collect(
            connector,
            connector.with_link(
                base, LinkFilter("amount", [Decimal("259.07"), Decimal("1.00")], "DECIMAL(12,2)")
            ),
        )
    )
    assert [r["id"] for r in got] == [7]
    # an aggregate is wrapped, never filtered inside
    agg = Statement("SELECT item_id, count(*) AS n FROM owners GROUP BY item_id")
    got = as_dicts(
        await collect(connector, connector.with_link(agg, LinkFilter("item_id", [2], "INTEGER")))
    )
    assert got == [{"item_id": 2, "n": 1}]
    # an empty parent filters everything out
    got = as_dicts(
        await collect(connector, connector.with_link(base, LinkFilter("id", [], "BIGINT")))
    )
    assert got == []


async def test_discover_tables_keys_and_distributions(connector: Connector) -> None:
    tables = {t.name: t for t in await connector.discover()}
    assert {"items", "owners", "scratch"} <= set(tables)
    items = {f.name: f for f in tables["items"].fields}
    assert list(items) == COLUMNS
    assert items["id"].is_primary and not items["name"].is_primary
    assert items["amount"].data_type == "DECIMAL(12,2)"
    assert items["big"].data_type == "BIGINT"
    assert {f.name: f for f in tables["owners"].fields}["item_id"].is_foreign_key
    assert tables["items"].row_count_estimate is not None
    assert abs(tables["items"].row_count_estimate - (N_ROWS + 1)) <= 2
    dist = items["id"].distribution
    assert dist is not None
    assert dist.distinct_count is not None and abs(dist.distinct_count - (N_ROWS + 1)) <= 3
    assert 1 <= len(dist.sample_values) <= 5 or dist.min_value is not None
    assert str(dist.min_value) == "0" and str(dist.max_value) == str(N_ROWS)
    msgspec.json.encode(list(tables.values()))  # everything is JSON-encodable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "sqlite", "duckdb"])
async def test_unreachable_database_fails_open_quickly(kind: str, tmp_path: Any) -> None:
    if kind in ("sqlite", "duckdb"):
        config = database_config(name="gone", type=kind, path=str(tmp_path / "missing.db"))
    else:
        config = database_config(
            name="gone",
            type=kind,
            host="127.0.0.1",
            port=_closed_port(),
            database="x",
            user="x",
            connect_timeout_seconds=2,
        )
    connector = registry.create(config)
    started = time.monotonic()
    with pytest.raises(ConnectorUnavailable) as info:
        await connector.open()
    assert time.monotonic() - started < 3
    assert "gone" in str(info.value)
    await connector.close()
    assert not (tmp_path / "missing.db").exists()  # never creates an empty database
