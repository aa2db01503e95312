"""End-to-end es_dsl through a real `sluice serve`: the session Elasticsearch 7.9.2
(tests/conftest.py `es_url`), PostgreSQL and MariaDB, seeded once, behind one server with four
bearer-token principals.

Principals: `reader` (es R), `writer` (es RW), `admin` (es RWA) and `corpus` (a table policy
for the hostile corpus: items R, orders RW, users RW without ssn/password_hash, secrets none,
scratch RWA). The row cap (30) and the link batch size (4) are small so truncation and
multi-batch links are exercised by a few dozen documents.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, start_server, stop_server
from tests.elasticsearch.conftest import Raw, raw  # noqa: F401  (the session raw client)
from tests.servers import MySQLServer, PgServer

ROW_CAP = 30
LINK_BATCH = 4
TOKENS = {name: f"{name}-{'e' * 24}" for name in ("reader", "writer", "admin", "corpus")}
INDICES = ("items", "orders", "users", "secrets", "scratch", "ledger")
CORPUS_POLICY = """
      tables:
        items: R
        orders: RW
        users: {level: RW, deny_columns: [ssn, password_hash]}
        secrets: none
        scratch: RWA
        ledger: RW
"""


@dataclass
class Env:
    server: Server
    raw: Raw
    pg: PgServer
    my: MySQLServer

    def post(self, path: str, body: Any, principal: str = "reader") -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[principal]}"}
        with self.server.client() as c:
            return c.post(path, json=body, headers=headers)

    def simple(
        self,
        table: str,
        query: Any,
        principal: str = "reader",
        language: str | None = "es_dsl",
        dry_run: bool = False,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "database": "es",
            "table": table,
            "query": query if isinstance(query, str) else json.dumps(query),
        }
        if language is not None:
            body["language"] = language
        if dry_run:
            body["dry_run"] = True
        return self.post("/v1/query/simple", body, principal)


def items() -> list[dict[str, Any]]:
    return [
        {
            "_id": f"i{i}",
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
            "_id": f"o{i}",
            "customer_id": 1 + i % 8,
            "sku": f"SKU-{1 + (i * 3) % 20:03d}",
            "qty": 1 + i % 5,
            "amount": round(2.5 * i + 0.75, 2),
        }
        for i in range(40)
    ]


def seed_es(client: Raw) -> None:
    for base in INDICES:
        client.http.delete(f"/{base}")
    client.create(
        "items",
        {
            "sku": {"type": "keyword"},
            "n": {"type": "long"},
            "name": {"type": "text"},
            "price": {"type": "double"},
            "kind": {"type": "keyword"},
            "tags": {"type": "keyword"},
        },
        items(),
    )
    client.create(
        "orders",
        {
            "customer_id": {"type": "long"},
            "sku": {"type": "keyword"},
            "qty": {"type": "long"},
            "amount": {"type": "double"},
        },
        orders(),
    )
    client.create(
        "users",
        {
            "name": {"type": "keyword"},
            "ssn": {"type": "keyword"},
            "password_hash": {"type": "keyword"},
        },
        [{"_id": i, "name": f"u{i}", "ssn": f"00{i}", "password_hash": "x"} for i in range(1, 4)],
    )
    client.create("secrets", {"token": {"type": "keyword"}}, [{"_id": 1, "token": "hunter2"}])
    client.create("scratch", {"k": {"type": "long"}}, [{"_id": 1, "k": 1}])
    client.create(
        "ledger",
        {"k": {"type": "long"}, "state": {"type": "keyword"}},
        [{"_id": i, "k": i, "state": "new"} for i in range(10)],
    )


def seed_sql(pg: PgServer, my: MySQLServer) -> None:
    picks = [(k, f"SKU-{1 + (k * 7) % 20:03d}", 1 + k % 4) for k in range(1, 16)]
    picks += [(16, "SKU-999", 9)]
    values = ", ".join(f"({i}, '{s}', {q})" for i, s, q in picks)
    pg.run(
        "DROP TABLE IF EXISTS es_picks",
        "CREATE TABLE es_picks (id integer PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL)",
        f"INSERT INTO es_picks VALUES {values}",
        "ANALYZE",
    )
    stock = ", ".join(
        f"('SKU-{i:03d}', 'w{w}', {i * 10 + w})" for i in range(1, 21) for w in (1, 2) if i % 4
    )
    my.run(
        "DROP TABLE IF EXISTS es_stock",
        "CREATE TABLE es_stock (sku varchar(16) NOT NULL, warehouse varchar(8) NOT NULL, "
        "units int NOT NULL, PRIMARY KEY (sku, warehouse))",
        f"INSERT INTO es_stock VALUES {stock}",
    )


def config_text(es_url: str, pg: PgServer, my: MySQLServer) -> str:
    policy = textwrap.indent(textwrap.dedent(CORPUS_POLICY).strip(), " " * 8)

    def principal(name: str, es: str) -> str:
        return (
            f"    {name}:\n      es:\n{es}\n      pg:\n        level: R\n"
            f"      my:\n        level: R\n"
        )

    return f"""\
databases:
  - name: es
    type: elasticsearch
    dsn: {es_url}
    query_timeout_seconds: 10
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
  - name: my
    type: mysql
    host: {my.host}
    port: {my.port}
    database: {my.database}
    user: {my.user}
    password: "{my.password}"
    pool_size: 4
auth:
  tokens:
{"".join(f"    - token: {t}{chr(10)}      principal: {p}{chr(10)}" for p, t in TOKENS.items())}\
permissions:
  principals:
{principal("reader", "        level: R")}\
{principal("writer", "        level: RW")}\
{principal("admin", "        level: RWA")}\
{principal("corpus", policy)}\
safety:
  max_rows_per_query: {ROW_CAP}
  max_link_values_per_batch: {LINK_BATCH}
  query_timeout_seconds: 10
"""


@pytest.fixture(scope="session")
def env(
    es_url: str,
    raw: Raw,  # noqa: F811
    pg_server: PgServer,
    mysql_server: MySQLServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("e2e_es")
    srv: Server | None = None
    try:
        seed_es(raw)
        seed_sql(pg_server, mysql_server)
        srv = start_server(config_text(es_url, pg_server, mysql_server), folder)
        yield Env(srv, raw, pg_server, mysql_server)
    finally:
        if srv is not None:
            stop_server(srv)
        for base in INDICES:
            raw.http.delete(f"/{base}")
