"""The dynamo language through a real `sluice serve` against moto: every read verb compared
with the plain client's answer (GetItem returns the item), every write and admin verb per
grant, the row cap, and linked joins with PostgreSQL in both directions checked against
joins computed from the source rows."""

from __future__ import annotations

import decimal
import math
from collections import defaultdict
from typing import Any

import httpx
import pytest

from connectors.dynamodb_items import to_document
from tests.docstores import seed
from tests.docstores.conftest import LINK_BATCH, ROW_CAP, Env
from tests.helpers import assert_blocked

pytestmark = [pytest.mark.dynamodb, pytest.mark.postgres]


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    return body


def rows(env: Env, table: str, body: dict[str, Any], principal: str = "reader") -> list[dict]:
    return ok(env.simple("dyn", table, body, principal))["data"]["rows"]


def as_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A connector document as the HTTP API renders it (decimals as JSON numbers)."""
    return {k: float(v) if isinstance(v, decimal.Decimal) else v for k, v in doc.items()}


def expect(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((as_json(to_document(i)) for i in items), key=repr)


def same(got: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Rows equal the client's items (attributes an item lacks are null in its row)."""
    want = expect(items)
    trimmed = sorted(({k: v for k, v in r.items() if v is not None} for r in got), key=repr)
    assert trimmed == want


def test_every_read_verb_equals_the_clients_answer(env: Env) -> None:
    c = seed.dynamo_client(env.dynamo_endpoint)
    key = {"sku": {"S": "SKU-007"}}
    want = c.get_item(TableName="items", Key=key)["Item"]
    got = rows(env, "items", {"verb": "GetItem", "Key": key})
    assert len(got) == 1  # the reference product's GetItem returned nothing
    same(got, [want])
    assert rows(env, "items", {"verb": "GetItem", "Key": {"sku": {"S": "SKU-404"}}}) == []

    scan = {
        "FilterExpression": "kind = :k AND n > :n",
        "ExpressionAttributeValues": {":k": {"S": "tool"}, ":n": {"N": "4"}},
    }
    want = c.scan(TableName="items", **scan)["Items"]
    assert len(want) == 11
    same(rows(env, "items", {"verb": "Scan", **scan}), want)

    query = {
        "KeyConditionExpression": "sku = :s",
        "ExpressionAttributeValues": {":s": {"S": "SKU-003"}},
    }
    same(
        rows(env, "items", {"verb": "Query", **query}), c.query(TableName="items", **query)["Items"]
    )

    keys = [{"sku": {"S": f"SKU-00{i}"}} for i in (1, 2, 3)]
    want = c.batch_get_item(RequestItems={"items": {"Keys": keys}})["Responses"]["items"]
    same(
        rows(env, "items", {"verb": "BatchGetItem", "RequestItems": {"items": {"Keys": keys}}}),
        want,
    )

    transact = [{"Get": {"TableName": "items", "Key": k}} for k in keys[:2]]
    want = [r["Item"] for r in c.transact_get_items(TransactItems=transact)["Responses"]]
    same(rows(env, "items", {"verb": "TransactGetItems", "TransactItems": transact}), want)

    statement = {
        "Statement": 'SELECT * FROM "items" WHERE sku = ?',
        "Parameters": [{"S": "SKU-011"}],
    }
    want = c.execute_statement(**statement)["Items"]
    same(rows(env, "items", {"verb": "ExecuteStatement", **statement}), want)

    got = rows(env, "items", {"verb": "DescribeTable"})
    assert got[0]["TableName"] == "items" and got[0]["ItemCount"] == 20
    assert rows(env, "items", {"verb": "Scan", "Select": "COUNT"}) == [{"count": 20}]


def test_the_row_cap_truncates_and_says_so(env: Env) -> None:
    r = ok(env.simple("dyn", "events", {"verb": "Scan"}))
    assert r["data"]["row_count"] == ROW_CAP and r["data"]["truncated"] is True
    sql = {"verb": "ExecuteStatement", "Statement": 'SELECT * FROM "events"'}
    r = ok(env.simple("dyn", "events", sql))
    assert r["data"]["row_count"] == ROW_CAP and r["data"]["truncated"] is True


# -- writes per grant -----------------------------------------------------------------------


@pytest.fixture
def ledger(env: Env) -> list[dict[str, Any]]:
    seed.reset_dynamo_ledger(env.dynamo_endpoint)
    return state(env)


def state(env: Env) -> list[dict[str, Any]]:
    c = seed.dynamo_client(env.dynamo_endpoint)
    return sorted(c.scan(TableName="ledger")["Items"], key=lambda i: int(i["k"]["S"]))


def k(n: int) -> dict[str, Any]:
    return {"k": {"S": str(n)}}


WRITES: list[tuple[str, dict[str, Any]]] = [
    ("PutItem", {"verb": "PutItem", "Item": {**k(100), "v": {"N": "1"}}}),
    (
        "UpdateItem",
        {
            "verb": "UpdateItem",
            "Key": k(2),
            "UpdateExpression": "SET v = :v",
            "ExpressionAttributeValues": {":v": {"N": "-1"}},
        },
    ),
    ("DeleteItem", {"verb": "DeleteItem", "Key": k(3)}),
    (
        "BatchWriteItem",
        {
            "verb": "BatchWriteItem",
            "RequestItems": {
                "ledger": [{"PutRequest": {"Item": k(101)}}, {"DeleteRequest": {"Key": k(4)}}]
            },
        },
    ),
    (
        "TransactWriteItems",
        {
            "verb": "TransactWriteItems",
            "TransactItems": [{"Put": {"Item": k(102)}}, {"Delete": {"Key": k(5)}}],
        },
    ),
    (
        "PartiQL UPDATE",
        {
            "verb": "ExecuteStatement",
            "Statement": 'UPDATE "ledger" SET v = ? WHERE k = ?',
            "Parameters": [{"N": "7"}, {"S": "6"}],
        },
    ),
    (
        "PartiQL DELETE",
        # moto's PartiQL DELETE cannot bind parameters: a literal here
        {"verb": "ExecuteStatement", "Statement": "DELETE FROM \"ledger\" WHERE k = '7'"},
    ),
]


@pytest.mark.parametrize(("name", "body"), WRITES, ids=[w[0] for w in WRITES])
def test_reader_is_blocked_and_nothing_changes(env: Env, ledger, name: str, body: dict) -> None:
    assert_blocked(env.simple("dyn", "ledger", body, "reader"), "RBAC_GATE")
    assert state(env) == ledger


@pytest.mark.parametrize(("name", "body"), WRITES, ids=[w[0] for w in WRITES])
def test_writer_writes(env: Env, ledger, name: str, body: dict) -> None:
    r = ok(env.simple("dyn", "ledger", body, "writer"))
    after = {int(i["k"]["S"]): i for i in state(env)}
    before = {int(i["k"]["S"]): i for i in ledger}
    changed = {n for n in after.keys() | before.keys() if after.get(n) != before.get(n)}
    want = {
        "PutItem": {100},
        "UpdateItem": {2},
        "DeleteItem": {3},
        "BatchWriteItem": {101, 4},
        "TransactWriteItems": {102, 5},
        "PartiQL UPDATE": {6},
        "PartiQL DELETE": {7},
    }[name]
    assert changed == want
    assert r["data"]["rows_affected"] == len(want)


def test_admin_verbs_need_admin(env: Env, ledger) -> None:
    create = {
        "verb": "CreateTable",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    ttl = {
        "verb": "UpdateTimeToLive",
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "exp"},
    }
    for body in (create, ttl, {"verb": "DeleteTable"}, {"verb": "CreateBackup", "BackupName": "b"}):
        assert_blocked(env.simple("dyn", "scratch", body, "writer"), "RBAC_GATE")
    ok(env.simple("dyn", "scratch_new", create, "admin"))
    ok(env.simple("dyn", "scratch_new", ttl, "admin"))
    c = seed.dynamo_client(env.dynamo_endpoint)
    assert (
        c.describe_time_to_live(TableName="scratch_new")["TimeToLiveDescription"]["AttributeName"]
        == "exp"
    )
    ok(env.simple("dyn", "scratch_new", {"verb": "DeleteTable"}, "admin"))
    assert "scratch_new" not in c.list_tables()["TableNames"]
    # a PartiQL DELETE without WHERE empties the table: admin only
    partiql = {"verb": "ExecuteStatement", "Statement": 'DELETE FROM "ledger"'}
    assert_blocked(env.simple("dyn", "ledger", partiql, "writer"), "RBAC_GATE")
    assert state(env) == ledger


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


def test_pg_parent_dynamo_child_on_a_non_key_attribute(env: Env) -> None:
    customers = env.pg.run("SELECT id, name FROM e2e_customers")
    names = {r["id"]: r["name"] for r in customers}
    steps = [
        {
            "step_id": "c",
            "database": "pg",
            "table": "e2e_customers",
            "query": "SELECT id, name FROM e2e_customers",
        },
        {
            "step_id": "o",
            "database": "dyn",
            "table": "orders",
            "language": "dynamo",
            "query": '{"verb": "Scan", "FilterExpression": "qty >= :q", '
            '"ExpressionAttributeValues": {":q": {"N": "2"}}, '
            '"ProjectionExpression": "customer_id, amount"}',
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
    for o in seed.orders():
        if o["qty"] >= 2:
            acc[names[o["customer_id"]]][0] += 1
            acc[names[o["customer_id"]]][1] += o["amount"]
    want = [{"name": k, "n": v[0], "total": pytest.approx(v[1])} for k, v in sorted(acc.items())]
    assert body["data"]["rows"] == want
    check_link(body, "o", len(customers))


def test_pg_parent_dynamo_child_by_partition_key(env: Env) -> None:
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
            "database": "dyn",
            "table": "items",
            "query": '{"verb": "Scan", "ProjectionExpression": "sku, price, kind"}',
            "depends_on": ["p"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    merge = (
        "SELECT p.id, i.kind, p.qty * i.price AS cost FROM p JOIN i ON i.sku = p.sku ORDER BY p.id"
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


def test_dynamo_parent_pg_child(env: Env) -> None:
    picks = env.pg.run("SELECT id, sku, qty FROM e2e_picks")
    toys = {i["sku"]: i for i in seed.items() if i["kind"] == "toy"}
    steps = [
        {
            "step_id": "i",
            "database": "dyn",
            "table": "items",
            "query": '{"verb": "Scan", "FilterExpression": "kind = :k", '
            '"ExpressionAttributeValues": {":k": {"S": "toy"}}, "ProjectionExpression": "sku, #n", '
            '"ExpressionAttributeNames": {"#n": "name"}}',
        },
        {
            "step_id": "p",
            "database": "pg",
            "table": "e2e_picks",
            "query": "SELECT id, sku, qty FROM e2e_picks",
            "depends_on": ["i"],
            "link_from": "sku",
            "link_to": "sku",
        },
    ]
    merge = (
        "SELECT i.name, sum(p.qty) AS qty FROM i JOIN p ON p.sku = i.sku "
        "GROUP BY i.name ORDER BY i.name"
    )
    body = run(env, steps, merge)
    acc: dict[str, int] = defaultdict(int)
    for r in picks:
        if r["sku"] in toys:
            acc[toys[r["sku"]]["name"]] += r["qty"]
    assert body["data"]["rows"] == [{"name": k, "qty": v} for k, v in sorted(acc.items())]
    assert acc
