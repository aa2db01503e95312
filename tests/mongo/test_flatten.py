"""Documents -> typed rows (connectors.mongo_flatten): pure functions, no server needed.

The server tests cover the same rules end to end; these pin the BSON types nx-27017 cannot
store (Decimal128, UUID) and the cross-batch type rules exactly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pyarrow as pa
from bson import Binary, Decimal128, Int64, ObjectId
from bson.son import SON

from connectors.base import Column
from connectors.mongo_flatten import RowShaper

UTC = dt.UTC


def test_every_bson_type_maps_to_its_column_type() -> None:
    oid, uid = ObjectId(), uuid.uuid4()
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    doc = {
        "_id": oid,
        "n": Int64(7),
        "i": 3,
        "f": 1.5,
        "b": True,
        "s": "x",
        "at": when,
        "dec": Decimal128("12.345"),
        "bin": Binary(b"\x00\x01", 0),
        "u": uid,
        "sub": SON([("k", oid), ("when", when)]),
        "arr": [1, "two", Decimal128("3.5")],
    }
    batch = RowShaper().rows([doc])
    assert {c.name: c.type for c in batch.columns} == {
        "_id": "VARCHAR",
        "n": "BIGINT",
        "i": "BIGINT",
        "f": "DOUBLE",
        "b": "BOOLEAN",
        "s": "VARCHAR",
        "at": "TIMESTAMPTZ",
        "dec": "DECIMAL(38,10)",
        "bin": "BLOB",
        "u": "UUID",
        "sub": "JSON",
        "arr": "JSON",
    }
    row = dict(zip([c.name for c in batch.columns], batch.rows[0], strict=True))
    assert row["_id"] == str(oid)
    assert row["n"] == 7 and row["b"] is True and row["f"] == 1.5
    assert row["at"] == when and row["at"].tzinfo is not None
    assert row["dec"] == decimal.Decimal("12.345") and isinstance(row["dec"], decimal.Decimal)
    assert row["bin"] == b"\x00\x01" and type(row["bin"]) is bytes
    assert row["u"] == uid
    # nested BSON values become plain JSON data
    assert row["sub"] == {"k": str(oid), "when": "2024-05-01T12:30:00+00:00"}
    assert row["arr"] == [1, "two", "3.5"]


def test_columns_are_the_union_in_first_seen_order_missing_is_none() -> None:
    batch = RowShaper().rows([{"a": 1}, {"b": "x", "a": 2}, {"c": 2.5}])
    assert [c.name for c in batch.columns] == ["a", "b", "c"]
    assert batch.rows == [(1, None, None), (2, "x", None), (None, None, 2.5)]


def test_later_batch_is_a_superset_and_keeps_earlier_types() -> None:
    shaper = RowShaper()
    first = shaper.rows([{"a": 1, "b": "x"}])
    second = shaper.rows([{"c": True, "a": 2.0}, {"a": 2.5, "b": 5}])
    assert [c.name for c in second.columns[: len(first.columns)]] == ["a", "b"]
    assert second.columns == [Column("a", "BIGINT"), Column("b", "VARCHAR"), Column("c", "BOOLEAN")]
    # 2.0 fits BIGINT exactly; 2.5 does not and becomes None; 5 in VARCHAR is text
    assert second.rows == [(2, None, True), (None, "5", None)]


def test_mixed_types_within_a_batch() -> None:
    batch = RowShaper().rows(
        [
            {"num": 1, "mix": 1, "nest": {"a": 1}, "nothing": None},
            {"num": 2.5, "mix": "one", "nest": [1, 2]},
            {"mix": {"k": True}, "nest": None},
        ]
    )
    types = {c.name: c.type for c in batch.columns}
    assert types == {"num": "DOUBLE", "mix": "VARCHAR", "nest": "JSON", "nothing": "VARCHAR"}
    assert [r[0] for r in batch.rows] == [1.0, 2.5, None]
    assert [r[1] for r in batch.rows] == ["1", "one", '{"k":true}']
    assert [r[2] for r in batch.rows] == [{"a": 1}, [1, 2], None]


def test_json_column_keeps_later_scalars_as_json_text() -> None:
    shaper = RowShaper()
    shaper.rows([{"x": {"a": 1}}])
    later = shaper.rows([{"x": "plain"}, {"x": 3}])
    assert later.rows == [('"plain"',), ("3",)]


def test_decimal_outside_decimal_38_10_is_none() -> None:
    batch = RowShaper().rows(
        [
            {"d": Decimal128("1.123456789012")},
            {"d": Decimal128("NaN")},
            {"d": Decimal128("1E+30")},
        ]
    )
    assert [r[0] for r in batch.rows] == [decimal.Decimal("1.1234567890"), None, None]


def test_arrow_batch_has_the_sink_types() -> None:
    oid, uid = ObjectId(), uuid.uuid4()
    when = dt.datetime(2024, 1, 2, tzinfo=UTC)
    batch = RowShaper().arrow(
        [
            {"_id": oid, "n": 1, "at": when, "tags": ["a"], "u": uid, "d": Decimal128("2.5")},
            {"_id": ObjectId(), "n": 2, "extra": "e"},
        ]
    )
    assert batch.rows is None and batch.arrow is not None
    schema = batch.arrow.schema
    assert schema.field("_id").type == pa.string()
    assert schema.field("n").type == pa.int64()
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("tags").type == pa.string()
    assert schema.field("d").type == pa.decimal128(38, 10)
    data = batch.arrow.to_pylist()
    assert data[0]["_id"] == str(oid) and data[0]["tags"] == '["a"]'
    assert data[0]["u"] == str(uid) and data[1]["extra"] == "e" and data[0]["extra"] is None
    assert [c.name for c in batch.columns] == ["_id", "n", "at", "tags", "u", "d", "extra"]
