"""Every MQL read over HTTP, each response compared whole with what PyMongo returns from the
same collection, and the guardrails' row cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from bson import json_util
from pymongo.database import Database

from tests.e2e_mongo.conftest import EPOCH, ROW_CAP, Env
from tests.e2e_mongo.expect import table

pytestmark = [pytest.mark.mongodb, pytest.mark.postgres]

Db = Database[dict[str, Any]]
SINCE = EPOCH + dt.timedelta(days=2)


def third_id(db: Db) -> Any:
    return db.items.find_one({"n": 3})["_id"]  # type: ignore[index]


# (id, body(db), expected docs(db)); bodies are built from the database when they embed ids
READS: list[tuple[str, Callable[[Db], dict[str, Any]], Callable[[Db], list[dict[str, Any]]]]] = [
    (
        "find-all",
        lambda db: {"operation": "find", "filter": {}, "sort": {"n": 1}},
        lambda db: list(db.items.find({}, sort=[("n", 1)])),
    ),
    (
        "find-filter-projection-sort-skip-limit",
        lambda db: {
            "operation": "find",
            "filter": {"kind": "tool", "price": {"$gt": 3}},
            "projection": {"sku": 1, "price": 1},
            "sort": {"price": -1},
            "skip": 2,
            "limit": 5,
        },
        lambda db: list(
            db.items.find(
                {"kind": "tool", "price": {"$gt": 3}},
                {"sku": 1, "price": 1},
                sort=[("price", -1)],
                skip=2,
                limit=5,
            )
        ),
    ),
    (
        "find-exclusion-projection",
        lambda db: {
            "operation": "find",
            "filter": {"n": {"$in": [4, 9, 16]}},
            "projection": {"_id": 0, "tags": 0, "created": 0},
            "sort": {"n": -1},
        },
        lambda db: list(
            db.items.find(
                {"n": {"$in": [4, 9, 16]}}, {"_id": 0, "tags": 0, "created": 0}, sort=[("n", -1)]
            )
        ),
    ),
    (
        "find-oid",
        lambda db: {"operation": "find", "filter": {"_id": third_id(db)}},
        lambda db: list(db.items.find({"_id": third_id(db)})),
    ),
    (
        "find-date",
        lambda db: {
            "operation": "find",
            "filter": {"created": {"$gte": SINCE}},
            "projection": {"n": 1, "created": 1},
            "sort": {"created": 1},
        },
        lambda db: list(
            db.items.find(
                {"created": {"$gte": SINCE}}, {"n": 1, "created": 1}, sort=[("created", 1)]
            )
        ),
    ),
    (
        "findOne",
        lambda db: {"operation": "findOne", "filter": {"sku": "SKU-007"}},
        lambda db: [db.items.find_one({"sku": "SKU-007"})],
    ),
    (
        "findOne-none",
        lambda db: {"operation": "findOne", "filter": {"sku": "missing"}},
        lambda db: [],
    ),
    (
        "aggregate-group",
        lambda db: {
            "operation": "aggregate",
            "pipeline": [
                {"$match": {"price": {"$lt": 20}}},
                {"$group": {"_id": "$kind", "total": {"$sum": "$price"}, "n": {"$sum": 1}}},
                {"$sort": {"_id": 1}},
            ],
        },
        lambda db: list(
            db.items.aggregate(
                [
                    {"$match": {"price": {"$lt": 20}}},
                    {"$group": {"_id": "$kind", "total": {"$sum": "$price"}, "n": {"$sum": 1}}},
                    {"$sort": {"_id": 1}},
                ]
            )
        ),
    ),
    (
        "aggregate-project-date",
        lambda db: {
            "operation": "aggregate",
            "pipeline": [
                {"$match": {"created": {"$lt": SINCE}}},
                {"$project": {"_id": 0, "sku": 1, "double": {"$multiply": ["$price", 2]}}},
                {"$sort": {"sku": -1}},
                {"$limit": 4},
            ],
        },
        lambda db: list(
            db.items.aggregate(
                [
                    {"$match": {"created": {"$lt": SINCE}}},
                    {"$project": {"_id": 0, "sku": 1, "double": {"$multiply": ["$price", 2]}}},
                    {"$sort": {"sku": -1}},
                    {"$limit": 4},
                ]
            )
        ),
    ),
    (
        "count",
        lambda db: {"operation": "count", "filter": {"kind": "toy"}},
        lambda db: [{"count": db.items.count_documents({"kind": "toy"})}],
    ),
    (
        "count-date",
        lambda db: {"operation": "count", "filter": {"created": {"$gte": SINCE}}},
        lambda db: [{"count": db.items.count_documents({"created": {"$gte": SINCE}})}],
    ),
    (
        "distinct",
        lambda db: {"operation": "distinct", "key": "kind"},
        lambda db: [{"kind": v} for v in db.items.distinct("kind")],
    ),
    (
        "distinct-filtered",
        lambda db: {"operation": "distinct", "key": "customer_id", "filter": {"qty": {"$gte": 3}}},
        lambda db: [
            {"customer_id": v} for v in db.orders.distinct("customer_id", {"qty": {"$gte": 3}})
        ],
    ),
]


def collection_of(case_id: str) -> str:
    return "orders" if case_id == "distinct-filtered" else "items"


@pytest.mark.parametrize("language", ["mql", None], ids=["mql", "omitted"])
@pytest.mark.parametrize(("case_id", "body", "expected"), READS, ids=[r[0] for r in READS])
def test_read_matches_pymongo(
    env: Env,
    case_id: str,
    body: Callable[[Db], dict[str, Any]],
    expected: Callable[[Db], list[dict[str, Any]]],
    language: str | None,
) -> None:
    # Extended JSON on the wire: ObjectIds as {"$oid"}, datetimes as {"$date"}
    text = json_util.dumps(body(env.mongo))
    r = env.simple(collection_of(case_id), text, language=language)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "ok"
    columns, rows = table(expected(env.mongo))
    if case_id == "findOne-none":
        assert got["data"]["rows"] == [] and got["data"]["row_count"] == 0
        return
    assert rows, "a case that reads nothing proves little"
    assert got["data"] == {"columns": columns, "rows": rows, "row_count": len(rows)}
    assert got["safety"]["warnings"] == []
    assert got["metadata"]["database"] == "mongo"


def test_extended_json_text_is_parsed(env: Env) -> None:
    """`$oid` and `$date` written by hand, as a client would send them."""
    oid = third_id(env.mongo)
    q = (
        '{"operation": "find", "filter": {"$or": [{"_id": {"$oid": "' + str(oid) + '"}}, '
        '{"created": {"$gte": {"$date": "2025-01-06T00:00:00Z"}}}]}, "sort": {"n": 1}}'
    )
    r = env.simple("items", q)
    assert r.status_code == 200, r.text
    flt = {"$or": [{"_id": oid}, {"created": {"$gte": dt.datetime(2025, 1, 6, tzinfo=dt.UTC)}}]}
    columns, rows = table(env.mongo.items.find(flt, sort=[("n", 1)]))
    assert 1 < len(rows) < 20
    assert r.json()["data"] == {"columns": columns, "rows": rows, "row_count": len(rows)}


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "find", "filter": {}, "sort": {"seq": 1}},
        {"operation": "find", "filter": {}, "sort": {"seq": 1}, "limit": 500},
        {"operation": "aggregate", "pipeline": [{"$sort": {"seq": 1}}]},
    ],
    ids=["find", "find-limit-above-cap", "aggregate"],
)
def test_row_cap_truncates_with_a_warning(env: Env, body: dict[str, Any]) -> None:
    total = env.mongo.events.count_documents({})
    assert total > ROW_CAP
    r = env.simple("events", body)
    assert r.status_code == 200, r.text
    got = r.json()
    columns, rows = table(env.mongo.events.find({}, sort=[("seq", 1)], limit=ROW_CAP))
    assert got["data"] == {
        "columns": columns,
        "rows": rows,
        "row_count": ROW_CAP,
        "truncated": True,
    }
    assert any(str(ROW_CAP) in w for w in got["safety"]["warnings"]), got["safety"]


def test_under_the_cap_is_not_truncated(env: Env) -> None:
    r = env.simple(
        "events", {"operation": "find", "filter": {}, "sort": {"seq": 1}, "limit": ROW_CAP}
    )
    got = r.json()
    assert got["data"]["row_count"] == ROW_CAP and "truncated" not in got["data"]
    assert got["safety"]["warnings"] == []


def test_sort_as_a_list_of_pairs(env: Env) -> None:
    r = env.simple(
        "items",
        {
            "operation": "find",
            "filter": {},
            "sort": [["price", -1]],
            "projection": {"price": 1},
            "limit": 3,
        },
    )
    assert r.status_code == 200, r.text
    columns, rows = table(env.mongo.items.find({}, {"price": 1}, sort=[("price", -1)], limit=3))
    assert r.json()["data"] == {"columns": columns, "rows": rows, "row_count": 3}
