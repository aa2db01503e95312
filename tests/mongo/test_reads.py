"""MongoConnector reads, writes, links and discovery against a real wire-protocol server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from bson import ObjectId

from connectors.base import Batch, Column, LinkFilter, Statement
from connectors.errors import QueryFailed
from connectors.mongo import MongoConnector
from connectors.registry import get

pytestmark = pytest.mark.mongodb

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def stmt(body: dict[str, Any] | str, collection: str = "orders", **kw: Any) -> Statement:
    text = body if isinstance(body, str) else json.dumps(body)
    return Statement(text, options={"collection": collection}, **kw)


async def collect(conn: MongoConnector, statement: Statement) -> list[Batch]:
    return [b async for b in conn.stream(statement)]


def records(batches: list[Batch]) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        names = [c.name for c in b.columns]
        rows = b.rows if b.rows is not None else [tuple(r.values()) for r in b.arrow.to_pylist()]
        out.extend(dict(zip(names, r, strict=True)) for r in rows)
    return out


@pytest.fixture
async def orders(mdb: Any) -> list[ObjectId]:
    """Six orders: sku s0..s5, qty 0..5, status open/closed alternating, a nested address."""
    ids = [ObjectId() for _ in range(6)]
    await mdb.orders.insert_many(
        [
            {
                "_id": ids[i],
                "sku": f"s{i}",
                "qty": i,
                "price": i * 1.25,
                "status": "open" if i % 2 == 0 else "closed",
                "at": BASE + dt.timedelta(days=i),
                "address": {"city": f"c{i % 3}", "zip": 1000 + i},
                "tags": ["t", str(i)],
            }
            for i in range(6)
        ]
    )
    return ids


def test_registry_and_class_attributes() -> None:
    cls = get("mongodb")
    assert cls is MongoConnector
    assert (cls.language, cls.dialect) == ("mql", "mql")
    assert [s.__struct_config__.tag for s in cls.settings] == ["mongodb"]


async def test_find_filter_sort_skip_limit_projection(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    batches = await collect(
        connector,
        stmt(
            {
                "operation": "find",
                "filter": {"qty": {"$gte": 1}},
                "sort": [["qty", -1]],
                "skip": 1,
                "limit": 3,
                "projection": {"sku": 1, "qty": 1},
            }
        ),
    )
    # field order follows the server's documents (MongoDB puts _id first; nx-27017 last)
    assert {c.name: c.type for c in batches[0].columns} == {
        "_id": "VARCHAR",
        "sku": "VARCHAR",
        "qty": "BIGINT",
    }
    assert [(r["sku"], r["qty"]) for r in records(batches)] == [("s4", 4), ("s3", 3), ("s2", 2)]
    assert records(batches)[0]["_id"] == str(orders[4])


async def test_find_rows_are_typed_and_nested_values_are_json(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    batches = await collect(connector, stmt({"operation": "find", "sort": {"qty": 1}}))
    types = {c.name: c.type for c in batches[0].columns}
    assert types == {
        "_id": "VARCHAR",
        "sku": "VARCHAR",
        "qty": "BIGINT",
        "price": "DOUBLE",
        "status": "VARCHAR",
        "at": "TIMESTAMPTZ",
        "address": "JSON",
        "tags": "JSON",
    }
    first = records(batches)[0]
    assert first["at"] == BASE and first["at"].utcoffset() == dt.timedelta(0)
    assert first["address"] == {"city": "c0", "zip": 1000}
    assert first["tags"] == ["t", "0"]
    assert first["_id"] == str(orders[0])


async def test_extended_json_filters(connector: MongoConnector, orders: list[ObjectId]) -> None:
    by_id = await collect(
        connector,
        stmt(json.dumps({"operation": "find", "filter": {"_id": {"$oid": str(orders[2])}}})),
    )
    assert [r["sku"] for r in records(by_id)] == ["s2"]
    by_date = await collect(
        connector,
        stmt(
            {
                "operation": "find",
                "sort": {"qty": 1},
                "filter": {"at": {"$gte": {"$date": "2024-01-05T00:00:00Z"}}},
            }
        ),
    )
    assert [r["sku"] for r in records(by_date)] == ["s4", "s5"]
    by_long = await collect(
        connector, stmt({"operation": "find", "filter": {"qty": {"$numberLong": "3"}}})
    )
    assert [r["sku"] for r in records(by_long)] == ["s3"]


async def test_find_one(connector: MongoConnector, orders: list[ObjectId]) -> None:
    one = await collect(connector, stmt({"operation": "findOne", "filter": {"sku": "s3"}}))
    assert len(one) == 1 and [r["qty"] for r in records(one)] == [3]
    none = await collect(
        connector,
        stmt({"operation": "findOne", "filter": {"sku": "nope"}, "projection": {"sku": 1}}),
    )
    assert len(none) == 1 and none[0].rows == []
    assert [c.name for c in none[0].columns] == ["_id", "sku"]


async def test_count_and_distinct(connector: MongoConnector, orders: list[ObjectId]) -> None:
    count = await collect(connector, stmt({"operation": "count", "filter": {"status": "open"}}))
    assert count[0].columns == [Column("count", "BIGINT")] and count[0].rows == [(3,)]
    distinct = await collect(connector, stmt({"operation": "distinct", "key": "status"}))
    assert distinct[0].columns == [Column("status", "VARCHAR")]
    assert sorted(r[0] for r in distinct[0].rows) == ["closed", "open"]
    filtered = await collect(
        connector, stmt({"operation": "distinct", "key": "qty", "filter": {"status": "closed"}})
    )
    assert sorted(r[0] for r in filtered[0].rows) == [1, 3, 5]
    empty = await collect(
        connector, stmt({"operation": "distinct", "key": "sku", "filter": {"qty": 99}})
    )
    assert [(b.columns, b.rows) for b in empty] == [([Column("sku", "VARCHAR")], [])]


async def test_aggregate(connector: MongoConnector, orders: list[ObjectId]) -> None:
    batches = await collect(
        connector,
        stmt(
            {
                "operation": "aggregate",
                "pipeline": [
                    {"$match": {"qty": {"$gte": 1}}},
                    {"$group": {"_id": "$status", "total": {"$sum": "$qty"}}},
                    {"$sort": {"_id": 1}},
                ],
            }
        ),
    )
    assert [(r["_id"], r["total"]) for r in records(batches)] == [("closed", 9), ("open", 6)]


async def test_batches_are_bounded_and_max_rows_stops(connector: MongoConnector, mdb: Any) -> None:
    await mdb.many.insert_many([{"n": i} for i in range(250)])
    body = {"operation": "find", "sort": {"n": 1}, "projection": {"_id": 0}}
    batches = await collect(connector, stmt(body, "many", batch_size=40))
    assert [len(b) for b in batches] == [40] * 6 + [10]
    assert [r["n"] for r in records(batches)] == list(range(250))
    capped = await collect(connector, stmt(body, "many", batch_size=40, max_rows=101))
    assert [len(b) for b in capped] == [40, 40, 21]
    agg = await collect(
        connector,
        stmt(
            {
                "operation": "aggregate",
                "pipeline": [{"$sort": {"n": 1}}, {"$project": {"_id": 0, "n": 1}}],
            },
            "many",
            batch_size=100,
            max_rows=150,
        ),
    )
    assert [len(b) for b in agg] == [100, 50]
    assert [r["n"] for r in records(agg)] == list(range(150))


async def test_union_of_fields_across_batches_with_stable_types(
    connector: MongoConnector, mdb: Any
) -> None:
    await mdb.shapes.insert_many(
        [
            {"k": 1, "a": 1},
            {"k": 2, "a": 2},
            {"k": 3, "a": 3.5, "b": "late"},
            {"k": 4, "c": {"x": 1}},
        ]
    )
    body = {"operation": "find", "sort": {"k": 1}, "projection": {"_id": 0}}
    batches = await collect(connector, stmt(body, "shapes", batch_size=2))
    assert batches[0].columns == [Column("k", "BIGINT"), Column("a", "BIGINT")]
    assert batches[1].columns == [
        Column("k", "BIGINT"),
        Column("a", "BIGINT"),
        Column("b", "VARCHAR"),
        Column("c", "JSON"),
    ]
    # 3.5 cannot be a BIGINT: the column keeps its type, the value is None
    assert batches[1].rows == [(3, None, "late", None), (4, None, None, {"x": 1})]


async def test_bulk_path_yields_arrow_with_the_same_values(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    body = {"operation": "find", "sort": {"qty": 1}}
    rows = records(await collect(connector, stmt(body)))
    bulk = await collect(connector, stmt(body, bulk=True, batch_size=4))
    assert all(b.arrow is not None for b in bulk) and [len(b) for b in bulk] == [4, 2]
    arrow = records(bulk)
    assert [r["_id"] for r in arrow] == [r["_id"] for r in rows]
    assert [r["at"] for r in arrow] == [r["at"] for r in rows]
    assert [json.loads(r["address"]) for r in arrow] == [r["address"] for r in rows]
    agg = await collect(
        connector,
        stmt(
            {"operation": "aggregate", "pipeline": [{"$sort": {"qty": 1}}]}, bulk=True, max_rows=5
        ),
    )
    assert sum(len(b) for b in agg) == 5


async def test_empty_result_yields_one_empty_batch(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    batches = await collect(connector, stmt({"operation": "find", "filter": {"qty": 99}}))
    assert len(batches) == 1 and len(batches[0]) == 0


async def test_with_link_find_and_aggregate(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    find = connector.with_link(
        stmt({"operation": "find", "filter": {"status": "open"}, "sort": {"qty": 1}}),
        LinkFilter("sku", ["s0", "s1", "s2", "s4"], "VARCHAR"),
    )
    assert [r["sku"] for r in records(await collect(connector, find))] == ["s0", "s2", "s4"]
    agg = connector.with_link(
        stmt(
            {
                "operation": "aggregate",
                "pipeline": [{"$sort": {"qty": -1}}, {"$project": {"qty": 1, "_id": 0}}],
            }
        ),
        LinkFilter("qty", [1, 3], "BIGINT"),
    )
    assert records(await collect(connector, agg)) == [{"qty": 3}, {"qty": 1}]
    by_id = connector.with_link(
        stmt({"operation": "find"}), LinkFilter("_id", [str(orders[1]), str(orders[5])], "VARCHAR")
    )
    assert sorted(r["sku"] for r in records(await collect(connector, by_id))) == ["s1", "s5"]
    count = connector.with_link(
        stmt({"operation": "count", "filter": {"status": "closed"}}),
        LinkFilter("qty", [1, 2, 3], "BIGINT"),
    )
    assert records(await collect(connector, count)) == [{"count": 2}]


async def test_writes_return_rows_affected(connector: MongoConnector, mdb: Any) -> None:
    w = {"readonly": False}
    assert (
        await connector.execute_write(
            stmt({"operation": "insertOne", "document": {"k": 1, "v": "a"}}, "w", **w)
        )
        == 1
    )
    assert (
        await connector.execute_write(
            stmt(
                {
                    "operation": "insertMany",
                    "documents": [{"k": 2, "v": "b"}, {"k": 3, "v": "b"}, {"k": 4, "v": "c"}],
                },
                "w",
                **w,
            )
        )
        == 3
    )
    assert (
        await connector.execute_write(
            stmt(
                {"operation": "updateMany", "filter": {"v": "b"}, "update": {"$set": {"v": "B"}}},
                "w",
                **w,
            )
        )
        == 2
    )
    assert (
        await connector.execute_write(
            stmt(
                {
                    "operation": "updateOne",
                    "filter": {"k": 9},
                    "update": {"$set": {"v": "new"}},
                    "upsert": True,
                },
                "w",
                **w,
            )
        )
        == 1
    )
    assert (
        await connector.execute_write(
            stmt(
                {"operation": "replaceOne", "filter": {"k": 1}, "replacement": {"k": 1, "v": "r"}},
                "w",
                **w,
            )
        )
        == 1
    )
    assert (
        await connector.execute_write(
            stmt({"operation": "deleteOne", "filter": {"k": 4}}, "w", **w)
        )
        == 1
    )
    assert (
        await connector.execute_write(
            stmt({"operation": "deleteMany", "filter": {"v": "B"}}, "w", **w)
        )
        == 2
    )
    left = sorted([(d["k"], d["v"]) async for d in mdb.w.find({}, {"_id": 0})])
    assert left == [(1, "r"), (9, "new")]


async def test_write_in_stream_needs_a_write_grant(connector: MongoConnector, mdb: Any) -> None:
    body = {"operation": "insertOne", "document": {"k": 1}}
    with pytest.raises(QueryFailed, match="read-only"):
        await collect(connector, stmt(body, "w"))
    assert await mdb.w.count_documents({}) == 0
    done = await collect(connector, stmt(body, "w", readonly=False))
    assert done[0].rows == [(1,)] and await mdb.w.count_documents({}) == 1
    with pytest.raises(QueryFailed, match=r"\$out"):
        await collect(
            connector, stmt({"operation": "aggregate", "pipeline": [{"$out": "copy"}]}, "w")
        )
    with pytest.raises(QueryFailed, match="is a read"):
        await connector.execute_write(stmt({"operation": "find"}, "w", readonly=False))


async def test_server_errors_become_query_failed(
    connector: MongoConnector, orders: list[ObjectId]
) -> None:
    with pytest.raises(QueryFailed, match="nosuch"):
        await collect(connector, stmt({"operation": "aggregate", "pipeline": [{"$nosuch": {}}]}))
    with pytest.raises(QueryFailed, match="unknown MQL operation"):
        await collect(connector, stmt({"operation": "drop"}))
    with pytest.raises(QueryFailed, match="E11000|duplicate|UNIQUE"):
        await connector.execute_write(
            stmt(
                {"operation": "insertOne", "document": {"_id": {"$oid": str(orders[0])}}},
                readonly=False,
            )
        )


async def test_discover(connector: MongoConnector, orders: list[ObjectId], mdb: Any) -> None:
    await mdb.sparse.insert_many(
        [{"a": 1, "b": "x"}, {"a": 2}, {"a": 3, "b": None}, {"a": 2, "ref": ObjectId()}]
    )
    tables = {t.name: t for t in await connector.discover()}
    assert set(tables) == {"orders", "sparse"}
    orders_t = tables["orders"]
    assert orders_t.row_count_estimate == 6
    fields = {f.name: f for f in orders_t.fields}
    assert orders_t.fields[0].name == "_id" and fields["_id"].is_primary
    assert fields["_id"].data_type == "VARCHAR" and not fields["_id"].nullable
    assert fields["qty"].data_type == "BIGINT"
    assert fields["at"].data_type == "TIMESTAMPTZ"
    assert fields["address"].data_type == "JSON"
    qty = fields["qty"].distribution
    assert qty is not None and (qty.min_value, qty.max_value) == (0, 5)
    assert qty.distinct_count == 6 and qty.null_fraction == 0.0
    assert len(qty.sample_values) == 5 and set(qty.sample_values) <= set(range(6))
    status = fields["status"].distribution
    assert status is not None and status.distinct_count == 2
    # formatted as query results are (ISO-8601, Z for UTC)
    assert fields["at"].distribution.min_value == "2024-01-01T00:00:00Z"
    json.dumps([f.distribution.sample_values for f in orders_t.fields])  # JSON-encodable
    sparse = {f.name: f for f in tables["sparse"].fields}
    assert sparse["b"].nullable and sparse["b"].distribution.null_fraction == 0.75
    assert not sparse["a"].nullable and sparse["a"].distribution.distinct_count == 3
    assert not sparse["a"].is_primary
    # a field discovered as ObjectId gets the ObjectId rule in link filters
    linked = connector.with_link(
        stmt({"operation": "find"}, "sparse"),
        LinkFilter("ref", ["65a1b2c3d4e5f60718293a4b"], "VARCHAR"),
    )
    assert '"$oid"' in linked.text


async def test_objectid_fields_seen_in_reads_get_the_objectid_link_rule(
    connector: MongoConnector, mdb: Any
) -> None:
    owners = [ObjectId(), ObjectId()]
    await mdb.items.insert_many([{"n": i, "owner": owners[i % 2]} for i in range(4)])
    before = connector.with_link(
        stmt({"operation": "find"}, "items"), LinkFilter("owner", [str(owners[1])], "VARCHAR")
    )
    assert '"$oid"' not in before.text  # not known yet: the value stays a plain string
    first = records(await collect(connector, stmt({"operation": "find"}, "items")))
    assert first[0]["owner"] == str(owners[0])  # shown as hex text
    linked = connector.with_link(
        stmt({"operation": "find", "sort": {"n": 1}}, "items"),
        LinkFilter("owner", [str(owners[1])], "VARCHAR"),
    )
    assert [r["n"] for r in records(await collect(connector, linked))] == [1, 3]
