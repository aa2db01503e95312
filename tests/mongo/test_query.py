"""MQL bodies: validation and the link filter's rewrite (connectors.mongo_query)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest
from bson import Decimal128, Int64, ObjectId

from connectors.base import LinkFilter, Statement
from connectors.errors import QueryFailed
from connectors.mongo_query import OPERATIONS, apply_link, loads, parse

OID = "65a1b2c3d4e5f60718293a4b"


def st(body: dict | str, collection: str | None = "orders") -> Statement:
    text = body if isinstance(body, str) else json.dumps(body)
    return Statement(text, options={"collection": collection} if collection else {})


def test_extended_json_relaxed_and_canonical() -> None:
    q = parse(
        st(
            {
                "operation": "find",
                "filter": {
                    "_id": {"$oid": OID},
                    "at": {"$gte": {"$date": "2024-01-01T00:00:00Z"}},
                    "ts": {"$lt": {"$date": {"$numberLong": "1704067200000"}}},
                    "price": {"$numberDecimal": "9.99"},
                    "big": {"$numberLong": "9007199254740993"},
                    "u": {"$uuid": "12345678-1234-5678-1234-567812345678"},
                },
            }
        ),
        "m",
    )
    f = q.filter
    assert f["_id"] == ObjectId(OID)
    assert f["at"]["$gte"] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert f["ts"]["$lt"] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert f["price"] == Decimal128("9.99")
    assert f["big"] == Int64(9007199254740993)
    assert f["u"] == uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_unknown_operation_lists_the_allowed_ones() -> None:
    with pytest.raises(QueryFailed) as err:
        parse(st({"operation": "mapReduce"}), "m")
    msg = str(err.value)
    assert "mapReduce" in msg
    assert all(op in msg for op in OPERATIONS)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not json", "not valid"),
        ("[1, 2]", "JSON object"),
        ({"operation": "find", "fliter": {}}, "fliter"),
        ({"operation": "find", "filter": [1]}, "`filter` must be a JSON object"),
        ({"operation": "find", "limit": -1}, "`limit`"),
        ({"operation": "find", "sort": "a"}, "`sort`"),
        ({"operation": "find", "sort": {"a": 2}}, "1 or -1"),
        ({"operation": "aggregate", "pipeline": {"$match": {}}}, "`pipeline`"),
        ({"operation": "distinct"}, "`key`"),
        ({"operation": "insertMany", "documents": []}, "`documents`"),
        ({"operation": "deleteMany"}, "`filter`"),
        ({"operation": "updateOne", "filter": {}}, "`update`"),
    ],
)
def test_malformed_bodies_fail_clearly(body: dict | str, needle: str) -> None:
    with pytest.raises(QueryFailed, match=".*") as err:
        parse(st(body), "m")
    assert needle in str(err.value)


def test_collection_comes_from_the_step_table_first() -> None:
    body = {"operation": "find", "collection": "other"}
    assert parse(st(body, "orders"), "m").collection == "orders"
    assert parse(st(body, None), "m").collection == "other"
    with pytest.raises(QueryFailed, match="no collection"):
        parse(st({"operation": "find"}, None), "m")


def test_sort_as_object_or_pairs() -> None:
    a = parse(st({"operation": "find", "sort": {"a": 1, "b": -1}}), "m")
    b = parse(st({"operation": "find", "sort": [["a", 1], ["b", -1]]}), "m")
    assert a.sort == b.sort == [("a", 1), ("b", -1)]


def test_link_on_find_wraps_the_filter_in_and() -> None:
    s = apply_link(
        st({"operation": "find", "filter": {"status": "open"}}),
        LinkFilter("customer_id", [3, 1], "BIGINT"),
        "m",
    )
    f = loads(s.text, "m")["filter"]
    assert f == {"$and": [{"status": "open"}, {"customer_id": {"$in": [3, 1]}}]}
    assert s.options == {"collection": "orders"}


def test_link_on_empty_filter_is_just_the_in() -> None:
    s = apply_link(st({"operation": "count"}), LinkFilter("k", ["a"], "VARCHAR"), "m")
    assert loads(s.text, "m")["filter"] == {"k": {"$in": ["a"]}}


def test_link_on_aggregate_is_a_leading_match() -> None:
    pipeline = [{"$group": {"_id": "$k", "n": {"$sum": 1}}}]
    s = apply_link(
        st({"operation": "aggregate", "pipeline": pipeline}), LinkFilter("k", [1], "BIGINT"), "m"
    )
    assert loads(s.text, "m")["pipeline"] == [{"$match": {"k": {"$in": [1]}}}, *pipeline]
    geo = [{"$geoNear": {"near": [0, 0], "distanceField": "d"}}, {"$limit": 5}]
    s = apply_link(
        st({"operation": "aggregate", "pipeline": geo}), LinkFilter("k", [1], "BIGINT"), "m"
    )
    assert [next(iter(x)) for x in loads(s.text, "m")["pipeline"]] == [
        "$geoNear",
        "$match",
        "$limit",
    ]


def test_link_values_become_bson_values_not_text() -> None:
    when = dt.datetime(2024, 3, 1, 8, tzinfo=dt.UTC)
    s = apply_link(
        st({"operation": "find"}),
        LinkFilter("v", [decimal.Decimal("1.10"), dt.date(2024, 3, 1), when], "VARCHAR"),
        "m",
    )
    values = loads(s.text, "m")["filter"]["v"]["$in"]
    assert values == [Decimal128("1.10"), dt.datetime(2024, 3, 1, tzinfo=dt.UTC), when]
    # a hostile-looking value stays a plain string inside the $in array
    s = apply_link(
        st({"operation": "find"}), LinkFilter("v", ['x"}, "$where": "1'], "VARCHAR"), "m"
    )
    assert loads(s.text, "m")["filter"] == {"v": {"$in": ['x"}, "$where": "1']}}


def test_objectid_rule_is_conservative() -> None:
    link_id = LinkFilter("_id", [OID, "not-hex"], "VARCHAR")
    values = loads(apply_link(st({"operation": "find"}), link_id, "m").text, "m")
    # _id: both the ObjectId and the string, so either stored form matches
    assert values["filter"]["_id"]["$in"] == [ObjectId(OID), OID, "not-hex"]
    other = LinkFilter("ref", [OID], "VARCHAR")
    plain = loads(apply_link(st({"operation": "find"}), other, "m").text, "m")
    assert plain["filter"]["ref"]["$in"] == [OID]
    known = loads(apply_link(st({"operation": "find"}), other, "m", frozenset({"ref"})).text, "m")
    assert known["filter"]["ref"]["$in"] == [ObjectId(OID), OID]
    # a non-VARCHAR parent column is never converted
    typed = loads(
        apply_link(st({"operation": "find"}), LinkFilter("_id", [OID], "JSON"), "m").text, "m"
    )
    assert typed["filter"]["_id"]["$in"] == [OID]


def test_link_refuses_writes() -> None:
    with pytest.raises(QueryFailed, match="reads"):
        apply_link(
            st({"operation": "deleteMany", "filter": {}}), LinkFilter("k", [1], "BIGINT"), "m"
        )
