"""The couchdb language through a real `sluice serve` against PouchDB Server: every read
compared with the server's answer to a plain HTTP client, writes per grant, the row cap, and
linked joins with PostgreSQL in both directions checked against joins computed from the
source rows."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.docstores import seed
from tests.docstores.conftest import LINK_BATCH, ROW_CAP, Env
from tests.helpers import assert_blocked

pytestmark = [pytest.mark.couchdb, pytest.mark.postgres]


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    return body


def rows(env: Env, table: str, body: dict[str, Any], principal: str = "reader") -> list[dict]:
    return ok(env.simple("couch", table, body, principal))["data"]["rows"]


def client(env: Env) -> httpx.Client:
    return httpx.Client(base_url=env.couch_url, timeout=30)


def plain(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: str(d.get("_id", d.get("id"))))


def test_find_equals_the_servers_answer(env: Env) -> None:
    body = {"selector": {"kind": "tool", "n": {"$gt": 4}}, "fields": ["_id", "n", "tags"]}
    with client(env) as c:
        want = c.post("/items/_find", json={**body, "limit": 1000}).json()["docs"]
    got = rows(env, "items", {"operation": "find", **body})
    assert len(want) == 11
    assert plain(got) == plain(want)


def test_get_returns_the_document(env: Env) -> None:
    with client(env) as c:
        want = c.get("/items/SKU-007").json()
    got = rows(env, "items", {"operation": "get", "id": "SKU-007"})
    assert got == [want]
    assert rows(env, "items", {"operation": "get", "id": "SKU-404"}) == []


def test_all_docs_view_and_explain(env: Env) -> None:
    with client(env) as c:
        all_docs = c.get("/orders/_all_docs", params={"startkey": '"o010"', "limit": 5}).json()
        view = c.get("/items/_design/stats/_view/by_kind", params={"group": "true"}).json()
        explain = c.post("/orders/_explain", json={"selector": {"qty": 2}}).json()
    got = rows(env, "orders", {"operation": "all_docs", "startkey": "o010", "limit": 5})
    want = [{"id": r["id"], "key": r["key"], "rev": r["value"]["rev"]} for r in all_docs["rows"]]
    assert got == want
    got = rows(
        env, "items", {"operation": "view", "ddoc": "stats", "view": "by_kind", "group": True}
    )
    assert got == view["rows"] and {r["key"] for r in got} == {"tool", "toy"}
    got = rows(env, "orders", {"operation": "explain", "selector": {"qty": 2}})
    assert len(got) == 1 and set(got[0]) == set(explain)


def test_the_row_cap_truncates_and_says_so(env: Env) -> None:
    r = ok(env.simple("couch", "events", {"operation": "find", "selector": {}}))
    assert r["data"]["row_count"] == ROW_CAP and r["data"]["truncated"] is True
    r = ok(env.simple("couch", "events", {"operation": "all_docs", "include_docs": True}))
    assert r["data"]["row_count"] == ROW_CAP and r["data"]["truncated"] is True


# -- writes per grant -----------------------------------------------------------------------


@pytest.fixture
def ledger(env: Env) -> list[dict[str, Any]]:
    seed.reset_couch_ledger(env.couch_url)
    return docs(env)


def docs(env: Env) -> list[dict[str, Any]]:
    with client(env) as c:
        found = c.get("/ledger/_all_docs", params={"include_docs": "true"}).json()["rows"]
    return [r["doc"] for r in found]


def rev(env: Env, doc_id: str) -> str:
    with client(env) as c:
        return c.get(f"/ledger/{doc_id}").json()["_rev"]


def write(env: Env, body: dict[str, Any], principal: str) -> httpx.Response:
    return env.simple("couch", "ledger", body, principal)


def test_reader_cannot_write(env: Env, ledger: list[dict[str, Any]]) -> None:
    for body in (
        {"operation": "insert", "document": {"_id": "x", "v": 1}},
        {"operation": "delete", "id": "0", "rev": rev(env, "0")},
        {"operation": "bulk_docs", "docs": [{"_id": "y"}]},
    ):
        assert_blocked(write(env, body, "reader"), "RBAC_GATE")
    assert docs(env) == ledger


def test_writer_inserts_updates_deletes_and_bulk_writes(env: Env, ledger) -> None:
    r = ok(write(env, {"operation": "insert", "document": {"_id": "new", "v": 1}}, "writer"))
    assert r["data"]["rows_affected"] == 1
    doc = {"_id": "1", "_rev": rev(env, "1"), "k": 1, "v": -1}
    ok(write(env, {"operation": "update", "document": doc}, "writer"))
    ok(write(env, {"operation": "delete", "id": "2", "rev": rev(env, "2")}, "writer"))
    bulk = {
        "operation": "bulk_docs",
        "docs": [{"_id": "b1", "v": 5}, {"_id": "3", "_rev": rev(env, "3"), "_deleted": True}],
    }
    assert ok(write(env, bulk, "writer"))["data"]["rows_affected"] == 2
    after = {d["_id"]: d for d in docs(env)}
    assert set(after) == {"0", "1", "4", "5", "6", "7", "8", "9", "new", "b1"}
    assert after["1"]["v"] == -1 and after["new"]["v"] == 1


def test_design_documents_and_indexes_need_admin(env: Env, ledger) -> None:
    design = {"_id": "_design/x", "views": {"v": {"map": "function (d) { emit(d.k); }"}}}
    for body in (
        {"operation": "insert", "document": design},
        {"operation": "bulk_docs", "docs": [{"_id": "fine"}, design]},
        {"operation": "create_index", "index": {"fields": ["k"]}},
        {"operation": "delete_database"},
    ):
        assert_blocked(write(env, body, "writer"), "RBAC_GATE")
    assert docs(env) == ledger
    ok(write(env, {"operation": "insert", "document": design}, "admin"))
    ok(write(env, {"operation": "create_index", "index": {"fields": ["k"]}}, "admin"))
    got = rows(env, "ledger", {"operation": "view", "ddoc": "x", "view": "v", "key": 3})
    assert [r["id"] for r in got] == ["3"]


# -- linked joins with PostgreSQL -----------------------------------------------------------


def run(env: Env, steps: list[dict[str, Any]], merge: str) -> dict[str, Any]:
    body = ok(env.post("/v1/query", {"steps": steps, "merge": merge}))
    assert "truncated" not in body["data"], body["data"]
    return body


def check_link(body: dict[str, Any], step_id: str, values: int) -> None:
    step = {s["step_id"]: s for s in body["metadata"]["steps"]}[step_id]
    assert step["strategy"] == "link" and step["status"] == "ok"
    assert step["link_values"] == values
    assert step["native_queries"] == math.ceil(values / LINK_BATCH) > 1


def test_pg_parent_couch_child_on_a_field(env: Env) -> None:
    customers = env.pg.run("SELECT id, name FROM e2e_customers")
    orders = [o for o in seed.orders() if o["qty"] >= 2]
    steps = [
        {
            "step_id": "c",
            "database": "pg",
            "table": "e2e_customers",
            "query": "SELECT id, name FROM e2e_customers",
        },
        {
            "step_id": "o",
            "database": "couch",
            "table": "orders",
            "language": "couchdb",
            "query": '{"operation": "find", "selector": {"qty": {"$gte": 2}}, '
            '"fields": ["customer_id", "amount"]}',
            "depends_on": ["c"],
            "link_from": "id",
            "link_to": "customer_id",
        },
    ]
    merge = (
        "SELECT c.name, count(*) AS n, sum(o.amount) AS total FROM c JOIN o "
        "ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name"
    )
    body = run(env, steps, merge)
    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0])
    names = {r["id"]: r["name"] for r in customers}
    for o in orders:
        acc[names[o["customer_id"]]][0] += 1
        acc[names[o["customer_id"]]][1] += o["amount"]
    want = [{"name": k, "n": v[0], "total": pytest.approx(v[1])} for k, v in sorted(acc.items())]
    assert body["data"]["rows"] == want
    check_link(body, "o", len(customers))


def test_pg_parent_couch_child_by_id(env: Env) -> None:
    picks = env.pg.run("SELECT id, sku, qty FROM e2e_picks")
    by_sku = {i["sku"]: i for i in seed.items()}
    steps = [
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, sku, qty FROM e2e_picks",
        },
        {
            "step_id": "i",
            "database": "couch",
            "table": "items",
            "query": '{"operation": "find", "selector": {}, "fields": ["_id", "price", "kind"]}',
            "depends_on": ["p"],
            "link_from": "sku",
            "link_to": "_id",
        },
    ]
    merge = (
        "SELECT p.id, i.kind, p.qty * i.price AS cost "
        'FROM p JOIN i ON i."_id" = p.sku ORDER BY p.id'
    )
    body = run(env, steps, merge)
    want = [
        {
            "id": r["id"],
            "kind": by_sku[r["sku"]]["kind"],
            "cost": pytest.approx(r["qty"] * by_sku[r["sku"]]["price"]),
        }
        for r in sorted(picks, key=lambda r: r["id"])
        if r["sku"] in by_sku
    ]
    assert body["data"]["rows"] == want and len(want) == 15
    check_link(body, "i", len({r["sku"] for r in picks}))


def test_couch_parent_pg_child(env: Env) -> None:
    picks = env.pg.run("SELECT id, sku, qty FROM e2e_picks")
    toys = {i["sku"]: i for i in seed.items() if i["kind"] == "toy"}
    steps = [
        {
            "step_id": "i",
            "database": "couch",
            "table": "items",
            "query": '{"operation": "find", "selector": {"kind": "toy"}, '
            '"fields": ["_id", "name"]}',
        },
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, sku, qty FROM e2e_picks",
            "depends_on": ["i"],
            "link_from": "_id",
            "link_to": "sku",
        },
    ]
    merge = (
        'SELECT i.name, sum(p.qty) AS qty FROM i JOIN p ON p.sku = i."_id" '
        "GROUP BY i.name ORDER BY i.name"
    )
    body = run(env, steps, merge)
    acc: dict[str, int] = defaultdict(int)
    for r in picks:
        if r["sku"] in toys:
            acc[toys[r["sku"]]["name"]] += r["qty"]
    assert body["data"]["rows"] == [{"name": k, "qty": v} for k, v in sorted(acc.items())]
    assert acc
