"""Federated joins over HTTP with Elasticsearch as a linked child (PostgreSQL -> Elasticsearch)
and as a parent (Elasticsearch -> MariaDB), each checked against the same join computed in
Python from the source rows read directly. The link batch size is 4, so every link spans
several batches, and the child keeps its own query next to the link filter."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.e2e_es.conftest import LINK_BATCH, Env
from tests.es_server import ES_SETUP_TIMEOUT

pytestmark = [pytest.mark.elasticsearch, pytest.mark.postgres, pytest.mark.mysql, ES_SETUP_TIMEOUT]


def run(env: Env, steps: list[dict[str, Any]], merge: str) -> dict[str, Any]:
    r = env.post("/v1/query", {"steps": steps, "merge": merge})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and "truncated" not in body["data"], body["data"]
    return body


def check_link(body: dict[str, Any], step_id: str, values: set[Any]) -> None:
    step = {s["step_id"]: s for s in body["metadata"]["steps"]}[step_id]
    assert step["strategy"] == "link" and step["status"] == "ok", step
    assert step["link_values"] == len(values)
    assert step["native_queries"] == math.ceil(len(values) / LINK_BATCH) > 1


def test_pg_parent_es_child(env: Env) -> None:
    picks = env.pg.run("SELECT id, sku, qty FROM es_picks")
    items = env.raw.search("items", {"size": 100})["hits"]["hits"]
    steps = [
        {
            "step_id": "p",
            "database": "pg",
            "table": "es_picks",
            "query": "SELECT id, sku, qty FROM es_picks",
        },
        {
            "step_id": "i",
            "database": "es",
            "table": "items",
            "language": "es_dsl",
            "query": json.dumps(
                {"query": {"term": {"kind": "tool"}}, "_source": ["sku", "price", "kind"]}
            ),
            "depends_on": ["p"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    merge = "SELECT p.id, p.sku, p.qty, i.price FROM p JOIN i ON i.sku = p.sku ORDER BY p.id"
    body = run(env, steps, merge)
    by_sku = {h["_source"]["sku"]: h["_source"] for h in items}
    want = [
        {"id": r["id"], "sku": r["sku"], "qty": r["qty"], "price": by_sku[r["sku"]]["price"]}
        for r in sorted(picks, key=lambda r: r["id"])
        if r["sku"] in by_sku and by_sku[r["sku"]]["kind"] == "tool"
    ]
    assert want and len(want) < len(picks)  # the child's own filter dropped some
    assert body["data"]["rows"] == [{**w, "price": pytest.approx(w["price"])} for w in want]
    check_link(body, "i", {r["sku"] for r in picks})


def test_es_parent_mariadb_child(env: Env) -> None:
    orders = env.raw.search("orders", {"query": {"range": {"qty": {"gte": 3}}}, "size": 100})[
        "hits"
    ]["hits"]
    stock = env.my.run("SELECT sku, warehouse, units FROM es_stock")
    steps = [
        {
            "step_id": "o",
            "database": "es",
            "table": "orders",
            "language": "es_dsl",
            "query": json.dumps(
                {"query": {"range": {"qty": {"gte": 3}}}, "_source": ["sku", "qty"]}
            ),
        },
        {
            "step_id": "s",
            "database": "my",
            "table": "es_stock",
            "query": "SELECT sku, warehouse, units FROM es_stock WHERE units > 20",
            "depends_on": ["o"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    merge = (
        "SELECT o._id, o.sku, o.qty, s.warehouse, s.units FROM o "
        "JOIN s ON s.sku = o.sku ORDER BY o._id, s.warehouse"
    )
    body = run(env, steps, merge)
    want = sorted(
        (
            {
                "_id": h["_id"],
                "sku": h["_source"]["sku"],
                "qty": h["_source"]["qty"],
                "warehouse": w,
                "units": u,
            }
            for h in orders
            for sku, w, u in stock
            if sku == h["_source"]["sku"] and u > 20
        ),
        key=lambda r: (r["_id"], r["warehouse"]),
    )
    assert want
    assert body["data"]["rows"] == want
    check_link(body, "s", {h["_source"]["sku"] for h in orders})


def test_linked_es_child_with_an_empty_parent(env: Env) -> None:
    steps = [
        {
            "step_id": "p",
            "database": "pg",
            "table": "es_picks",
            "query": "SELECT id, sku FROM es_picks WHERE id < 0",
        },
        {
            "step_id": "i",
            "database": "es",
            "table": "items",
            "language": "es_dsl",
            "query": json.dumps({"query": {"match_all": {}}, "_source": ["sku", "price"]}),
            "depends_on": ["p"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    body = run(env, steps, "SELECT p.id, i.price FROM p LEFT JOIN i ON i.sku = p.sku")
    assert body["data"]["rows"] == []
