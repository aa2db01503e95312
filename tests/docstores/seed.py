"""The data of the end-to-end document-store tests, seeded with the stores' own clients.

Collections/tables (CouchDB databases and DynamoDB tables of the same names, the safety
corpus' policy applies to them): items (20, keyed by sku; CouchDB also has a `_design/stats`
view), orders (28), events (60: more than the row cap), users (denied fields ssn and
password_hash), secrets (no access), audit_log, scratch, ledger (the write tests' own,
reset per test). PostgreSQL: e2e_customers (9) and e2e_picks (17 item references by sku, two
matching nothing).
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
import httpx

from tests.docstores.conftest import DYNAMO_ENV
from tests.servers import PgServer

COLLECTIONS = ("items", "orders", "events", "users", "secrets", "audit_log", "scratch", "ledger")
# DynamoDB partition key of each table
KEYS = {
    "items": ("sku", "S"),
    "orders": ("order_id", "S"),
    "events": ("seq", "N"),
    "users": ("id", "N"),
    "secrets": ("id", "N"),
    "audit_log": ("id", "N"),
    "scratch": ("id", "N"),
    "ledger": ("k", "S"),  # moto's PartiQL DELETE only matches string keys
}
VIEW = {
    "_id": "_design/stats",
    "views": {"by_kind": {"map": "function (doc) { emit(doc.kind, doc.n); }", "reduce": "_sum"}},
}


def items() -> list[dict[str, Any]]:
    return [
        {
            "sku": f"SKU-{i:03d}",
            "n": i,
            "name": f"item {i}",
            "price": round(i * 1.25, 2),
            "kind": "tool" if i % 3 else "toy",
            "tags": ["a", f"t{i % 4}"],
        }
        for i in range(1, 21)
    ]


def orders() -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"o{i:03d}",
            "customer_id": 1 + i % 8,
            "sku": f"SKU-{1 + (i * 3) % 20:03d}",
            "qty": 1 + i % 5,
            "amount": round(2.5 * i + 0.75, 2),
        }
        for i in range(28)
    ]


def documents() -> dict[str, list[dict[str, Any]]]:
    return {
        "items": items(),
        "orders": orders(),
        "events": [{"seq": i, "kind": f"k{i % 3}"} for i in range(60)],
        "users": [
            {"id": i, "name": f"u{i}", "ssn": f"00{i}", "password_hash": "x"} for i in range(1, 4)
        ],
        "secrets": [{"id": 1, "token": "hunter2"}],
        "audit_log": [{"id": 1, "what": "boot"}],
        "scratch": [{"id": 1, "v": 0}],
        "ledger": ledger(),
    }


def ledger() -> list[dict[str, Any]]:
    return [{"k": i, "grp": "a" if i < 6 else "b", "v": i * 10} for i in range(10)]


def couch_id(collection: str, doc: dict[str, Any]) -> str:
    key = KEYS[collection][0]
    return str(doc[key])


def seed_couch(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        for name, docs in documents().items():
            c.delete(f"/{name}")
            assert c.put(f"/{name}").status_code in (201, 202)
            body = [{"_id": couch_id(name, d), **d} for d in docs]
            if name == "items":
                body.append(VIEW)
            resp = c.post(f"/{name}/_bulk_docs", json={"docs": body})
            assert resp.status_code == 201 and not [r for r in resp.json() if "error" in r]


def reset_couch_ledger(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        c.delete("/ledger")
        assert c.put("/ledger").status_code in (201, 202)
        docs = [{"_id": couch_id("ledger", d), **d} for d in ledger()]
        assert c.post("/ledger/_bulk_docs", json={"docs": docs}).status_code == 201


def couch_state(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every database's documents with their revisions (design documents included)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        names = [n for n in c.get("/_all_dbs").json() if not n.startswith("_")]
        return {
            n: c.get(f"/{n}/_all_docs", params={"include_docs": "true"}).json()["rows"]
            for n in sorted(names)
        }


@functools.cache
def dynamo_client(endpoint: str) -> Any:
    """One boto3 client per endpoint (building one loads the service model: ~0.3 s)."""
    from botocore.config import Config

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        **DYNAMO_ENV,
    )


def typed(value: Any) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    from connectors.dynamodb_query import serialise

    if isinstance(value, float):
        return serialise(value)
    if isinstance(value, list):
        return {"SS": value}
    return TypeSerializer().serialize(value)


def item(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: typed(v) for k, v in doc.items()}


def create_table(client: Any, name: str) -> None:
    key, kind = KEYS[name]
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}],
        BillingMode="PAY_PER_REQUEST",
    )


def put_all(client: Any, name: str, docs: list[dict[str, Any]]) -> None:
    key, kind = KEYS[name]
    if kind == "S":
        docs = [{**d, key: str(d[key])} for d in docs]
    for at in range(0, len(docs), 25):
        reqs = [{"PutRequest": {"Item": item(d)}} for d in docs[at : at + 25]]
        assert not client.batch_write_item(RequestItems={name: reqs}).get("UnprocessedItems")


def seed_dynamo(endpoint: str) -> None:
    client = dynamo_client(endpoint)
    existing = set(client.list_tables()["TableNames"])
    for name, docs in documents().items():
        if name in existing:
            client.delete_table(TableName=name)
        create_table(client, name)
        put_all(client, name, docs)


def reset_dynamo_ledger(endpoint: str) -> None:
    client = dynamo_client(endpoint)
    for found in client.scan(TableName="ledger")["Items"]:
        client.delete_item(TableName="ledger", Key={"k": found["k"]})
    put_all(client, "ledger", ledger())


def dynamo_state(endpoint: str) -> dict[str, Any]:
    """Every table's key schema and items (sorted), the table list being the keys."""
    client = dynamo_client(endpoint)
    out: dict[str, Any] = {}
    for name in sorted(client.list_tables()["TableNames"]):
        desc = client.describe_table(TableName=name)["Table"]
        rows = client.scan(TableName=name)["Items"]
        out[name] = (desc["KeySchema"], sorted(rows, key=repr))
    return out


def seed_pg(pg: PgServer) -> None:
    picks = [(k, f"SKU-{1 + (k * 7) % 20:03d}", 1 + k % 4) for k in range(1, 16)]
    picks += [(16, "SKU-999", 9), (17, "nope", 1)]
    values = ", ".join(f"({i}, '{s}', {q})" for i, s, q in picks)
    pg.run(
        "DROP TABLE IF EXISTS e2e_customers, e2e_picks",
        "CREATE TABLE e2e_customers (id integer PRIMARY KEY, name text NOT NULL, region text)",
        "INSERT INTO e2e_customers SELECT g, 'cust ' || g, CASE WHEN g % 2 = 0 THEN 'north' "
        "ELSE 'south' END FROM generate_series(1, 9) g",
        "CREATE TABLE e2e_picks (id integer PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL)",
        f"INSERT INTO e2e_picks VALUES {values}",
        "ANALYZE",
    )
