"""Federated joins over HTTP in both directions between PostgreSQL and MongoDB, each checked
against the same join computed in Python from rows read directly (asyncpg, PyMongo). The link
batch size is 4, so every link here spans several batches."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import pytest

from tests.e2e_mongo.conftest import LINK_BATCH, Env

pytestmark = [pytest.mark.mongodb, pytest.mark.postgres]


def mql(body: dict[str, Any]) -> str:
    return json.dumps(body)


def run(env: Env, steps: list[dict[str, Any]], merge: str) -> dict[str, Any]:
    r = env.post("/v1/query", {"steps": steps, "merge": merge})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and "truncated" not in body["data"], body["data"]
    return body


def check_link(body: dict[str, Any], step_id: str, values: set[Any]) -> None:
    """The child step was fed every distinct parent value, in ceil(n / batch) queries."""
    step = {s["step_id"]: s for s in body["metadata"]["steps"]}[step_id]
    assert step["strategy"] == "link" and step["status"] == "ok"
    assert step["link_values"] == len(values)
    assert step["native_queries"] == math.ceil(len(values) / LINK_BATCH) > 1


def approx_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: pytest.approx(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows
    ]


def test_pg_parent_mongo_child_on_an_int_field_aggregated(env: Env) -> None:
    # customer 9 has no orders: its link batch comes back empty
    customers = env.pg.run("SELECT id, name, region FROM e2e_customers")
    orders = list(env.mongo.orders.find({"qty": {"$gte": 2}}))
    steps = [
        {
            "step_id": "c",
            "database": "pg",
            "table": "e2e_customers",
            "query": "SELECT id, name, region FROM e2e_customers",
        },
        {
            "step_id": "o",
            "database": "mongo",
            "table": "orders",
            "query": mql(
                {
                    "operation": "find",
                    "filter": {"qty": {"$gte": 2}},
                    "projection": {"customer_id": 1, "amount": 1, "qty": 1},
                }
            ),
            "depends_on": ["c"],
            "link_from": "id",
            "link_to": "customer_id",
        },
    ]
    merge = (
        "SELECT c.name, c.region, count(*) AS n, sum(o.amount) AS total, "
        "sum(o.qty) AS qty FROM c JOIN o ON o.customer_id = c.id "
        "GROUP BY c.name, c.region ORDER BY c.name"
    )
    body = run(env, steps, merge)

    acc: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0.0, 0])
    by_id = {r["id"]: r for r in customers}
    for o in orders:
        c = by_id.get(o["customer_id"])
        if c is not None:
            a = acc[(c["name"], c["region"])]
            a[0] += 1
            a[1] += o["amount"]
            a[2] += o["qty"]
    expected = [
        {"name": k[0], "region": k[1], "n": v[0], "total": v[1], "qty": v[2]}
        for k, v in sorted(acc.items())
    ]
    assert len(expected) >= 5
    assert body["data"]["columns"] == ["name", "region", "n", "total", "qty"]
    assert body["data"]["rows"] == approx_rows(expected)
    check_link(body, "o", {r["id"] for r in customers})


def test_pg_parent_mongo_aggregate_child_on_a_string_field(env: Env) -> None:
    picks = env.pg.run("SELECT id, sku, qty FROM e2e_picks")
    items = {d["sku"]: d for d in env.mongo.items.find({})}
    steps = [
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, sku, qty FROM e2e_picks",
        },
        {
            "step_id": "i",
            "database": "mongo",
            "table": "items",
            "query": mql(
                {
                    "operation": "aggregate",
                    "pipeline": [{"$project": {"_id": 0, "sku": 1, "kind": 1, "price": 1}}],
                }
            ),
            "depends_on": ["p"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    merge = (
        "SELECT i.kind, count(*) AS picks, sum(p.qty * i.price) AS value "
        "FROM p JOIN i ON i.sku = p.sku GROUP BY i.kind ORDER BY i.kind"
    )
    body = run(env, steps, merge)

    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0])
    for p in picks:
        item = items.get(p["sku"])
        if item is not None:
            acc[item["kind"]][0] += 1
            acc[item["kind"]][1] += p["qty"] * item["price"]
    expected = [{"kind": k, "picks": v[0], "value": v[1]} for k, v in sorted(acc.items())]
    assert sum(r["picks"] for r in expected) == 15  # the two dangling picks match nothing
    assert body["data"]["rows"] == approx_rows(expected)
    check_link(body, "i", {r["sku"] for r in picks})


def test_pg_parent_mongo_child_on_objectid(env: Env) -> None:
    """24-hex strings in PostgreSQL find ObjectId `_id`s; the join is row-level."""
    picks = env.pg.run("SELECT id, item_hex, qty FROM e2e_picks")
    items = {str(d["_id"]): d for d in env.mongo.items.find({})}
    steps = [
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, item_hex, qty FROM e2e_picks",
        },
        {
            "step_id": "i",
            "database": "mongo",
            "table": "items",
            "query": mql(
                {"operation": "find", "filter": {}, "projection": {"sku": 1, "created": 1}}
            ),
            "depends_on": ["p"],
            "link_from": "item_hex",
            "link_to": "_id",
        },
    ]
    merge = (
        "SELECT p.id, p.qty, i._id, i.sku, i.created FROM p JOIN i "
        "ON i._id = p.item_hex ORDER BY p.id"
    )
    body = run(env, steps, merge)
    expected = [
        {
            "id": p["id"],
            "qty": p["qty"],
            "_id": p["item_hex"],
            "sku": items[p["item_hex"]]["sku"],
            "created": items[p["item_hex"]]["created"],
        }
        for p in sorted(picks, key=lambda r: r["id"])
        if p["item_hex"] in items
    ]
    assert len(expected) == 15
    rows = body["data"]["rows"]
    assert [{k: v for k, v in r.items() if k != "created"} for r in rows] == [
        {k: v for k, v in r.items() if k != "created"} for r in expected
    ]
    # created: a TIMESTAMPTZ that went through DuckDB; compare the instants
    import datetime as dt

    got = [dt.datetime.fromisoformat(r["created"].replace("Z", "+00:00")) for r in rows]
    assert got == [r["created"] for r in expected]
    check_link(body, "i", {p["item_hex"] for p in picks})


def test_mongo_parent_pg_child_on_objectid_strings(env: Env) -> None:
    items = list(env.mongo.items.find({"n": {"$lte": 18}}, {"sku": 1}))
    picks = env.pg.run("SELECT id, item_hex, qty FROM e2e_picks")
    steps = [
        {
            "step_id": "i",
            "database": "mongo",
            "table": "items",
            "query": mql(
                {"operation": "find", "filter": {"n": {"$lte": 18}}, "projection": {"sku": 1}}
            ),
        },
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, item_hex, qty FROM e2e_picks",
            "depends_on": ["i"],
            "link_from": "_id",
            "link_to": "item_hex",
        },
    ]
    merge = (
        "SELECT i.sku, count(*) AS n, sum(p.qty) AS qty FROM i JOIN p "
        "ON p.item_hex = i._id GROUP BY i.sku ORDER BY i.sku"
    )
    body = run(env, steps, merge)
    sku = {str(d["_id"]): d["sku"] for d in items}
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in picks:
        if p["item_hex"] in sku:
            acc[sku[p["item_hex"]]][0] += 1
            acc[sku[p["item_hex"]]][1] += p["qty"]
    expected = [{"sku": k, "n": v[0], "qty": v[1]} for k, v in sorted(acc.items())]
    assert len(expected) >= 8
    assert body["data"]["rows"] == expected
    check_link(body, "p", set(sku))


def test_mongo_aggregate_parent_pg_child_on_integers(env: Env) -> None:
    pipeline = [
        {"$match": {"qty": {"$gte": 2}}},
        {"$project": {"_id": 0, "customer_id": 1, "amount": 1}},
    ]
    orders = list(env.mongo.orders.aggregate(pipeline))
    customers = {r["id"]: r for r in env.pg.run("SELECT id, region FROM e2e_customers")}
    steps = [
        {
            "step_id": "o",
            "database": "mongo",
            "table": "orders",
            "query": mql({"operation": "aggregate", "pipeline": pipeline}),
        },
        {
            "step_id": "c",
            "database": "pg",
            "table": "e2e_customers",
            "query": "SELECT id, region FROM e2e_customers",
            "depends_on": ["o"],
            "link_from": "customer_id",
            "link_to": "id",
        },
    ]
    merge = (
        "SELECT c.region, count(*) AS orders, sum(o.amount) AS amount FROM o JOIN c "
        "ON c.id = o.customer_id GROUP BY c.region ORDER BY c.region"
    )
    body = run(env, steps, merge)
    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0])
    for o in orders:
        region = customers[o["customer_id"]]["region"]
        acc[region][0] += 1
        acc[region][1] += o["amount"]
    expected = [{"region": k, "orders": v[0], "amount": v[1]} for k, v in sorted(acc.items())]
    assert len(expected) == 2
    assert body["data"]["rows"] == approx_rows(expected)
    check_link(body, "c", {o["customer_id"] for o in orders})


def test_an_empty_link_batch_keeps_types(env: Env) -> None:
    ids = [1, *range(9, 21)]  # only customer 1 has orders: most batches come back empty
    env.pg.run(
        "INSERT INTO e2e_customers SELECT g, 'ghost ' || g, 'none' "
        "FROM generate_series(10, 20) g ON CONFLICT DO NOTHING"
    )
    try:
        steps = [
            {
                "step_id": "c",
                "database": "pg",
                "table": "e2e_customers",
                "query": f"SELECT id FROM e2e_customers WHERE id IN ({', '.join(map(str, ids))})",
            },
            {
                "step_id": "o",
                "database": "mongo",
                "table": "orders",
                "query": mql(
                    {
                        "operation": "find",
                        "filter": {},
                        "projection": {"customer_id": 1, "amount": 1},
                    }
                ),
                "depends_on": ["c"],
                "link_from": "id",
                "link_to": "customer_id",
            },
        ]
        body = run(env, steps, "SELECT sum(amount) AS total FROM o")
        expected = sum(d["amount"] for d in env.mongo.orders.find({"customer_id": 1}))
        assert body["data"]["rows"] == [{"total": pytest.approx(expected)}]
    finally:
        env.pg.run("DELETE FROM e2e_customers WHERE id >= 10")
