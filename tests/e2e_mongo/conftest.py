"""End-to-end MQL through a real `sluice serve`: nx-27017 (the session server of tests/mongo)
and PostgreSQL, seeded once, behind one server with four bearer-token principals.

Principals: `reader` (mongo R), `writer` (mongo RW), `admin` (mongo RWA) and `corpus` (the
safety corpus' table policy, so every hostile entry meets the policy it was written for).
The row cap (30) and the link batch size (4) are small so truncation and multi-batch links
are exercised by a few dozen documents.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from tests.api.conftest import Server, start_server, stop_server
from tests.mongo.conftest import mongo_uri  # noqa: F401  (the session nx-27017 fixture)
from tests.safety.conftest import TABLES_POLICY
from tests.servers import PgServer

MONGO_DB = "sluice_e2e"
ROW_CAP = 30
LINK_BATCH = 4
TOKENS = {name: f"{name}-{'t' * 24}" for name in ("reader", "writer", "admin", "corpus")}
EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclass
class Env:
    server: Server
    mongo: Database[dict[str, Any]]
    pg: PgServer

    def post(self, path: str, body: Any, principal: str = "reader") -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[principal]}"}
        with self.server.client() as c:
            return c.post(path, json=body, headers=headers)

    def simple(
        self,
        table: str,
        query: Any,
        principal: str = "reader",
        language: str | None = "mql",
        database: str = "mongo",
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "database": database,
            "table": table,
            "query": query if isinstance(query, str) else _json(query),
        }
        if language is not None:
            body["language"] = language
        return self.post("/v1/query/simple", body, principal)


def _json(body: Any) -> str:
    from bson import json_util

    return json_util.dumps(body)


def seed_mongo(db: Database[dict[str, Any]]) -> None:
    """items (20), orders (28), events (60) and the corpus' users/secrets/audit_log."""
    items = [
        {
            "_id": ObjectId(),
            "sku": f"SKU-{i:03d}",
            "n": i,
            "name": f"item {i}",
            "price": round(i * 1.25, 2),
            "kind": "tool" if i % 3 else "toy",
            "created": EPOCH + dt.timedelta(hours=i * 7),
            "tags": ["a", f"t{i % 4}"],
        }
        for i in range(1, 21)
    ]
    db.items.insert_many(items)
    db.orders.insert_many(
        [
            {
                "_id": ObjectId(),
                "customer_id": 1 + i % 8,
                "sku": items[(i * 3) % 20]["sku"],
                "qty": 1 + i % 5,
                "amount": round(2.5 * i + 0.75, 2),
            }
            for i in range(28)
        ]
    )
    db.events.insert_many([{"_id": ObjectId(), "seq": i, "kind": f"k{i % 3}"} for i in range(60)])
    db.users.insert_many(
        [{"id": i, "name": f"u{i}", "ssn": f"00{i}", "password_hash": "x"} for i in range(1, 4)]
    )
    db.secrets.insert_many([{"id": 1, "token": "hunter2"}])
    db.audit_log.insert_many([{"id": 1, "what": "boot"}])
    db.ledger.insert_many([{"k": 0}])  # the write tests' collection, reset per test


def seed_pg(pg: PgServer, items: list[dict[str, Any]]) -> None:
    """customers (8) and picks: 15 item references by 24-hex `_id` and by sku, plus two
    references that match nothing."""
    picks = [
        (k, str(items[(k * 7) % 20]["_id"]), items[(k * 7) % 20]["sku"], 1 + k % 4)
        for k in range(1, 16)
    ]
    picks += [(16, str(ObjectId()), "SKU-999", 9), (17, "0" * 24, "nope", 1)]
    values = ", ".join(f"({i}, '{h}', '{s}', {q})" for i, h, s, q in picks)
    pg.run(
        "DROP TABLE IF EXISTS e2e_customers, e2e_picks",
        "CREATE TABLE e2e_customers (id integer PRIMARY KEY, name text NOT NULL, region text)",
        "INSERT INTO e2e_customers SELECT g, 'cust ' || g, CASE WHEN g % 2 = 0 THEN 'north' "
        "ELSE 'south' END FROM generate_series(1, 9) g",
        "CREATE TABLE e2e_picks (id integer PRIMARY KEY, item_hex text NOT NULL, "
        "sku text NOT NULL, qty integer NOT NULL)",
        f"INSERT INTO e2e_picks VALUES {values}",
        "ANALYZE",
    )


def config_text(uri: str, pg: PgServer) -> str:
    corpus_mongo = textwrap.indent(textwrap.dedent(TABLES_POLICY).strip(), " " * 8)

    def principal(name: str, mongo: str) -> str:
        return f"    {name}:\n      mongo:\n{mongo}\n      pg:\n        level: R\n"

    return f"""\
databases:
  - name: mongo
    type: mongodb
    dsn: {uri}/{MONGO_DB}
    query_timeout_seconds: 5
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
auth:
  tokens:
{"".join(f"    - token: {t}{chr(10)}      principal: {p}{chr(10)}" for p, t in TOKENS.items())}\
permissions:
  principals:
{principal("reader", "        level: R")}\
{principal("writer", "        level: RW")}\
{principal("admin", "        level: RWA")}\
{principal("corpus", corpus_mongo)}\
safety:
  max_rows_per_query: {ROW_CAP}
  max_link_values_per_batch: {LINK_BATCH}
  query_timeout_seconds: 10
"""


@pytest.fixture(scope="session")
def env(
    mongo_uri: str,  # noqa: F811
    pg_server: PgServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    folder = tmp_path_factory.mktemp("e2e_mongo")
    srv: Server | None = None
    try:  # closes the client and drops the data even when seeding or startup fails
        client.drop_database(MONGO_DB)
        db = client[MONGO_DB]
        seed_mongo(db)
        seed_pg(pg_server, list(db.items.find({}, sort=[("n", 1)])))
        srv = start_server(config_text(mongo_uri, pg_server), folder)
        yield Env(srv, db, pg_server)
    finally:
        if srv is not None:
            stop_server(srv)
        client.drop_database(MONGO_DB)
        client.close()
        pg_server.run("DROP TABLE IF EXISTS e2e_customers, e2e_picks")
