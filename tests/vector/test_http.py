"""The vector language end to end through a real `sluice serve`: a LanceDB folder and a
pgvector database of product descriptions embedded by the offline model, a Qdrant local store,
and PostgreSQL orders. Checked against numpy's exact answer and rows read directly.

Principals: `reader` (R everywhere), `writer` (RW), `admin` (RWA), `masked` (R with the
`supplier` field denied). The row cap is 12 and the link batch 5, so truncation and
multi-batch links show with a few dozen products.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from connectors.embedding import default as embedder
from tests.api.conftest import Server, start_server, stop_server
from tests.helpers import assert_blocked
from tests.servers import PgServer

pytestmark = [pytest.mark.postgres]

ROW_CAP = 12
LINK_BATCH = 5
TOKENS = {p: f"{p}-{'v' * 24}" for p in ("reader", "writer", "admin", "masked")}
PRODUCTS = [
    "waterproof leather hiking boots with a Vibram sole",
    "lightweight trail running shoes",
    "insulated winter snow boots",
    "rubber rain boots for gardening",
    "goretex rain jacket with hood",
    "down sleeping bag rated to minus ten",
    "two person backpacking tent",
    "camping stove with gas canister",
    "espresso beans from Ethiopia, 1 kg",
    "ceramic pour-over coffee dripper",
    "stainless steel travel mug",
    "merino wool hiking socks",
    "trekking poles, carbon",
    "headlamp with red light mode",
    "waterproof dry bag, 20 litres",
    "leather work boots with steel toe",
    "yoga mat, non-slip",
    "noise cancelling headphones",
    "mountaineering boots for crampons",
    "children's wellington boots",
    "hand grinder for coffee",
    "thermal base layer top",
    "bike helmet",
    "kayak paddle",
]
DIM = 384


@dataclass
class Env:
    server: Server
    pg: PgServer
    lance: Path
    pgv: str  # pgvector socket folder
    vectors: np.ndarray  # product embeddings, row i = product id i + 1

    def post(self, path: str, body: Any, principal: str = "reader") -> httpx.Response:
        with self.server.client() as c:
            return c.post(path, json=body, headers={"Authorization": f"Bearer {TOKENS[principal]}"})

    def simple(
        self, database: str, table: str, body: dict[str, Any], principal: str = "reader"
    ) -> httpx.Response:
        return self.post(
            "/v1/query/simple",
            {"database": database, "table": table, "query": json.dumps(body), "language": "vector"},
            principal,
        )

    def rows(self, database: str, table: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        r = self.simple(database, table, body, **kw)
        assert r.status_code == 200, r.text
        return r.json()["data"]


def _dicts(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["rows"])


def product_table(vectors: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(1, len(PRODUCTS) + 1), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel(), pa.float32()), DIM
            ),
            "description": PRODUCTS,
            "supplier": [f"supplier {i % 3}" for i in range(len(PRODUCTS))],
            "price": pa.array([10.0 + 7 * i for i in range(len(PRODUCTS))], pa.float64()),
        }
    )


def seed_lance(folder: Path, vectors: np.ndarray) -> None:
    import lancedb

    db = lancedb.connect(str(folder))
    db.create_table("products", product_table(vectors), mode="overwrite")
    db.create_table("scratch", product_table(vectors), mode="overwrite")


async def _seed_pgv(folder: str, vectors: np.ndarray) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=folder, user="postgres", database="postgres")
    try:
        await conn.execute(f"""
            DROP TABLE IF EXISTS products;
            CREATE TABLE products (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL,
                description text, supplier text, price float8);
        """)
        await conn.executemany(
            "INSERT INTO products VALUES ($1, $2::text::vector, $3, $4, $5)",
            [
                (
                    i + 1,
                    "[" + ",".join(map(str, vectors[i])) + "]",
                    d,
                    f"supplier {i % 3}",
                    10.0 + 7 * i,
                )
                for i, d in enumerate(PRODUCTS)
            ],
        )
    finally:
        await conn.close()


def seed_pg(pg: PgServer) -> None:
    """orders: product k is ordered k % 4 times (product 4, 8, ... never), quantity 1..3."""
    pg.run(
        "DROP TABLE IF EXISTS vec_orders",
        "CREATE TABLE vec_orders (id serial PRIMARY KEY, customer_id int NOT NULL, "
        "product_id bigint NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL)",
        "INSERT INTO vec_orders (customer_id, product_id, qty, price) "
        "SELECT 1 + (p * 7 + n) % 5, p, 1 + n % 3, 10 + 7 * (p - 1) "
        f"FROM generate_series(1, {len(PRODUCTS)}) p, generate_series(1, 3) n WHERE n <= p % 4",
        "ANALYZE vec_orders",
    )


def config_text(env_dirs: dict[str, str], pg: PgServer) -> str:
    def principal(name: str, level: str, deny: bool = False) -> str:
        out = f"    {name}:\n"
        for db in ("lance", "pgv", "qdr", "pg"):
            out += f"      {db}:\n        level: {level if db != 'pg' else 'R'}\n"
            if deny and db != "pg":
                out += "        tables:\n          products: {level: R, deny_columns: [supplier]}\n"
        return out

    tokens = "".join(f"    - token: {t}\n      principal: {p}\n" for p, t in TOKENS.items())
    return f"""\
databases:
  - name: lance
    type: lancedb
    path: {env_dirs["lance"]}
  - name: pgv
    type: pgvector
    host: {env_dirs["pgv"]}
    user: postgres
    database: postgres
    pool_size: 4
  - name: qdr
    type: qdrant
    path: {env_dirs["qdrant"]}
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
auth:
  tokens:
{tokens}\
permissions:
  principals:
{principal("reader", "R")}\
{principal("writer", "RW")}\
{principal("admin", "RWA")}\
{principal("masked", "R", deny=True)}\
safety:
  max_rows_per_query: {ROW_CAP}
  max_link_values_per_batch: {LINK_BATCH}
  query_timeout_seconds: 20
"""


def seed_qdrant(path: str, vectors: np.ndarray) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=path)
    try:
        client.create_collection(
            "products",
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        )
        client.upsert(
            "products",
            points=[
                models.PointStruct(
                    id=i + 1,
                    vector=vectors[i].tolist(),
                    payload={
                        "description": d,
                        "supplier": f"supplier {i % 3}",
                        "price": 10.0 + 7 * i,
                    },
                )
                for i, d in enumerate(PRODUCTS)
            ],
        )
    finally:
        client.close()


@pytest.fixture(scope="module")
def env(
    pg_server: PgServer, pgvector_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("vector_http")
    vectors = np.stack(embedder().embed(PRODUCTS))
    lance = folder / "lance"
    lance.mkdir()
    seed_lance(lance, vectors)
    asyncio.run(_seed_pgv(pgvector_server, vectors))
    seed_qdrant(str(folder / "qdrant"), vectors)
    seed_pg(pg_server)
    dirs = {"lance": str(lance), "pgv": pgvector_server, "qdrant": str(folder / "qdrant")}
    # lancedb and qdrant_client take seconds to import (several times that on a loaded CI box)
    srv = start_server(config_text(dirs, pg_server), folder / "srv", timeout=120)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the four databases opened and discovered
            with srv.client() as c:
                if c.get("/v1/health").json().get("databases_connected") == 4:
                    break
            time.sleep(0.2)
        yield Env(srv, pg_server, lance, pgvector_server, vectors)
    finally:
        stop_server(srv)
        pg_server.run("DROP TABLE IF EXISTS vec_orders")


def nearest(env: Env, text: str, k: int, among: set[int] | None = None) -> list[int]:
    q = embedder().embed([text])[0].astype(np.float64)
    sims = env.vectors.astype(np.float64) @ q  # unit vectors: cosine
    order = [int(i) + 1 for i in np.argsort(-sims) if among is None or int(i) + 1 in among]
    return order[:k]


@pytest.mark.parametrize("db", ["lance", "pgv", "qdr"])
def test_near_text_ranks_as_numpy_does(env: Env, db: str) -> None:
    data = env.rows(
        db, "products", {"intent": "near_text", "text": "waterproof hiking boots", "limit": 5}
    )
    rows = _dicts(data)
    assert [r["id"] for r in rows] == nearest(env, "waterproof hiking boots", 5)
    assert rows[0]["description"].startswith("waterproof leather hiking boots")
    assert all(-1 <= r["score"] <= 1.0001 for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_vector_parent_postgres_child_revenue(env: Env) -> None:
    """products like 'waterproof hiking boots' and their revenue (the demo's question)."""
    steps = [
        {
            "step_id": "p",
            "database": "lance",
            "table": "products",
            "query": json.dumps(
                {
                    "intent": "near_text",
                    "text": "waterproof hiking boots",
                    "limit": 8,
                    "with_payload": ["description"],
                }
            ),
        },
        {
            "step_id": "o",
            "database": "pg",
            "table": "vec_orders",
            "query": "SELECT product_id, qty, price FROM vec_orders",
            "depends_on": ["p"],
            "link_from": "id",
            "link_to": "product_id",
        },
    ]
    merge = (
        "SELECT p.id, p.description, p.score, coalesce(sum(o.qty * o.price), 0) AS revenue "
        "FROM p LEFT JOIN o ON o.product_id = p.id GROUP BY p.id, p.description, p.score "
        "ORDER BY p.score DESC"
    )
    r = env.post("/v1/query", {"steps": steps, "merge": merge})
    assert r.status_code == 200, r.text
    body = r.json()
    got = _dicts(body["data"])
    ids = nearest(env, "waterproof hiking boots", 8)
    assert [g["id"] for g in got] == ids
    orders = env.pg.run("SELECT product_id, qty, price FROM vec_orders")
    for g in got:
        want = sum(float(o["qty"] * o["price"]) for o in orders if o["product_id"] == g["id"])
        assert math.isclose(float(g["revenue"]), want)
    step = {s["step_id"]: s for s in body["metadata"]["steps"]}["o"]
    assert step["native_queries"] == math.ceil(8 / LINK_BATCH)


@pytest.mark.parametrize("db", ["pgv", "qdr", "lance"])
def test_postgres_parent_vector_child_nearest_among_ordered(env: Env, db: str) -> None:
    """Customer 2's ordered products, then those nearest to 'boots for the mountains': the
    link is ANDed into the backend's own filter (the price filter stays)."""
    ordered = {
        r["product_id"]
        for r in env.pg.run("SELECT product_id FROM vec_orders WHERE customer_id = 2")
    }
    assert len(ordered) > LINK_BATCH
    steps = [
        {
            "step_id": "o",
            "database": "pg",
            "table": "vec_orders",
            "query": "SELECT DISTINCT product_id FROM vec_orders WHERE customer_id = 2",
        },
        {
            "step_id": "n",
            "database": db,
            "table": "products",
            "query": json.dumps(
                {
                    "intent": "near_text",
                    "text": "boots for the mountains",
                    "limit": 3,
                    "filter": {"price": {"$lt": 150}},
                }
            ),
            "depends_on": ["o"],
            "link_from": "product_id",
            "link_to": "id",
        },
    ]
    r = env.post(
        "/v1/query", {"steps": steps, "merge": "SELECT id, score FROM n ORDER BY score DESC"}
    )
    assert r.status_code == 200, r.text
    got = _dicts(r.json()["data"])
    cheap = {i + 1 for i in range(len(PRODUCTS)) if 10.0 + 7 * i < 150}
    allowed = ordered & cheap
    # a child runs once per link batch, each batch's top 3: the union, ranked, holds the best 3
    assert {g["id"] for g in got} <= allowed
    assert [g["id"] for g in got][:3] == nearest(env, "boots for the mountains", 3, allowed)


def lance_rows(env: Env, table: str = "scratch") -> list[dict[str, Any]]:
    import lancedb

    rows = lancedb.connect(str(env.lance)).open_table(table).to_arrow().drop_columns(["vector"])
    return sorted(rows.to_pylist(), key=lambda r: r["id"])


@pytest.fixture
def scratch(env: Env) -> Env:
    import lancedb

    lancedb.connect(str(env.lance)).create_table(
        "scratch", product_table(env.vectors), mode="overwrite"
    )
    return env


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


def test_writes_per_grant(scratch: Env) -> None:
    env = scratch
    upsert = {
        "intent": "upsert",
        "points": [
            {
                "id": 100,
                "vector": unit(1),
                "payload": {"description": "new", "supplier": "s", "price": 1.5},
            }
        ],
    }
    before = lance_rows(env)
    assert_blocked(env.simple("lance", "scratch", upsert, "reader"), "RBAC_GATE")
    assert lance_rows(env) == before
    r = env.simple("lance", "scratch", upsert, "writer")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rows_affected"] == 1
    assert lance_rows(env)[-1] == {"id": 100, "description": "new", "supplier": "s", "price": 1.5}
    r = env.simple(
        "lance",
        "scratch",
        {"intent": "set_payload", "ids": [1, 2], "payload": {"supplier": "z"}},
        "writer",
    )
    assert r.json()["data"]["rows_affected"] == 2
    assert [x["supplier"] for x in lance_rows(env)[:3]] == ["z", "z", "supplier 2"]
    r = env.simple("lance", "scratch", {"intent": "delete", "filter": {"supplier": "z"}}, "writer")
    assert r.json()["data"]["rows_affected"] == 2
    before = lance_rows(env)
    for body in (
        {"intent": "delete", "filter": {}},
        {"intent": "delete_all"},
        {"intent": "set_payload", "filter": {}, "payload": {"price": 0}},
        {"intent": "drop_collection"},
    ):
        assert_blocked(env.simple("lance", "scratch", body, "writer"), "RBAC_GATE")
        assert lance_rows(env) == before
    r = env.simple("lance", "scratch", {"intent": "delete_all"}, "admin")
    assert r.status_code == 200 and r.json()["data"]["rows_affected"] == len(before)
    assert lance_rows(env) == []


def test_upsert_adds_fields_only_when_asked_and_granted(scratch: Env) -> None:
    """A Lance table has a fixed schema: new payload fields are a 400 naming them, unless the
    upsert says `add_fields` (a structure change: the A level), which adds nullable columns
    typed from the values and keeps every other row as it was (NULL in the new columns)."""
    env = scratch
    point = {
        "id": 500,
        "vector": unit(5),
        "payload": {"description": "tent", "colour": "green", "weight_kg": 2, "tags": ["a"]},
    }
    plain = {"intent": "upsert", "points": [point]}
    asked = {**plain, "add_fields": True}
    before = lance_rows(env)
    r = env.simple("lance", "scratch", plain, "writer")
    assert r.status_code == 400, r.text
    assert "colour, tags, weight_kg" in r.text and "add_fields" in r.text
    assert_blocked(env.simple("lance", "scratch", asked, "writer"), "RBAC_GATE")
    assert lance_rows(env) == before
    r = env.simple("lance", "scratch", asked, "admin")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rows_affected"] == 1
    after = lance_rows(env)
    assert after[-1]["colour"] == "green" and after[-1]["weight_kg"] == 2
    assert json.loads(after[-1]["tags"]) == ["a"]
    old = [
        {k: v for k, v in row.items() if k not in ("colour", "weight_kg", "tags")}
        for row in after[:-1]
    ]
    assert old == before
    assert all(row["colour"] is None and row["weight_kg"] is None for row in after[:-1])
    # the new field is a field like the others: filtered on, and written without add_fields
    r = env.simple("lance", "scratch", {"intent": "count", "filter": {"weight_kg": {"$gt": 1}}})
    assert r.json()["data"]["rows"] == [{"count": 1}]
    again = {"intent": "upsert", "points": [{**point, "id": 501, "payload": {"colour": "red"}}]}
    assert env.simple("lance", "scratch", again, "writer").status_code == 200
    mixed = {"intent": "upsert", "add_fields": True,
             "points": [{"id": 502, "vector": unit(6), "payload": {"size": 1}},
                        {"id": 503, "vector": unit(7), "payload": {"size": "L"}}]}  # fmt: skip
    r = env.simple("lance", "scratch", mixed, "admin")
    assert r.status_code == 400 and "mixed types" in r.text
    assert "size" not in lance_rows(env)[0]


HOSTILE: list[tuple[str, dict[str, Any], int, str | None]] = [
    (
        "another collection in the body",
        {"intent": "delete", "collection": "products", "ids": [1]},
        403,
        "AST_CHECKER",
    ),
    (
        "filter bomb (depth)",
        {"intent": "delete", "filter": json.loads('{"$not": ' * 12 + '{"id": 1}' + "}" * 12)},
        403,
        "AST_CHECKER",
    ),
    (
        "filter bomb (width)",
        {"intent": "delete", "filter": {"$or": [{"id": i} for i in range(400)]}},
        403,
        "AST_CHECKER",
    ),
    (
        "huge $in",
        {"intent": "delete", "filter": {"id": {"$in": list(range(5000))}}},
        403,
        "AST_CHECKER",
    ),
    (
        "unknown operator",
        {"intent": "delete", "filter": {"id": {"$where": "1"}}},
        403,
        "AST_CHECKER",
    ),
    (
        "injection in a field name",
        {"intent": "delete", "filter": {"id` OR 1=1 --": 1}},
        403,
        "AST_CHECKER",
    ),
    (
        "effort over the bound",
        {"intent": "search", "vector": [0.1] * DIM, "ef": 10**6},
        403,
        "AST_CHECKER",
    ),
    ("delete-all without A", {"intent": "delete_all"}, 403, "RBAC_GATE"),
    ("empty-filter delete without A", {"intent": "delete", "filter": {}}, 403, "RBAC_GATE"),
    ("drop without A", {"intent": "drop_collection"}, 403, "RBAC_GATE"),
    (
        "wrong dimension upsert",
        {"intent": "upsert", "points": [{"id": 1, "vector": [0.1] * 3}]},
        400,
        None,
    ),
    ("SQL in a value", {"intent": "delete", "filter": {"description": "x' OR '1'='1"}}, 200, None),
]


@pytest.mark.parametrize(("name", "body", "status", "stage"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_bodies_leave_the_data_unchanged(
    scratch: Env, name: str, body: dict[str, Any], status: int, stage: str | None
) -> None:
    env = scratch
    before = lance_rows(env)
    r = env.simple("lance", "scratch", body, "writer")
    if stage is not None:
        assert_blocked(r, stage)
    else:
        assert r.status_code == status, r.text
        if status == 200:
            assert r.json()["data"]["rows_affected"] == 0
        else:
            assert "dimensions" in r.json()["error"]["message"]
    assert lance_rows(env) == before


def test_huge_limit_is_capped_and_reported(env: Env) -> None:
    data = env.rows("lance", "products", {"intent": "near_text", "text": "boots", "limit": 10**9})
    assert data["row_count"] == ROW_CAP and data["truncated"] is True
    data = env.rows("qdr", "products", {"intent": "scroll"})
    assert data["row_count"] == ROW_CAP and data["truncated"] is True


def test_wrong_dimension_search_is_refused(env: Env) -> None:
    for db in ("lance", "pgv", "qdr"):
        r = env.simple(db, "products", {"intent": "search", "vector": [0.1] * 17})
        # the backend refuses it before any I/O: the body is wrong, a 400 naming the dimensions
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "query_rejected"
        assert "dimensions" in r.json()["error"]["message"], r.text


def test_denied_field_is_refused(env: Env) -> None:
    for db in ("lance", "pgv", "qdr"):
        r = env.simple(db, "products", {"intent": "near_text", "text": "boots"}, "masked")
        assert_blocked(r, "RBAC_GATE")
        r = env.simple(
            db, "products", {"intent": "count", "filter": {"supplier": "supplier 1"}}, "masked"
        )
        assert_blocked(r, "RBAC_GATE")
        data = env.rows(
            db,
            "products",
            {"intent": "near_text", "text": "boots", "limit": 2, "with_payload": ["description"]},
            principal="masked",
        )
        assert data["columns"] == ["id", "score", "description"]


def test_catalog_shows_dimension_and_metric(env: Env) -> None:
    with env.server.client() as c:
        r = c.get(
            "/v1/databases/lance/tables/products",
            headers={"Authorization": f"Bearer {TOKENS['reader']}"},
        )
    assert r.status_code == 200, r.text
    fields = {f["name"]: f for f in r.json()["fields"]}
    assert fields["vector"]["data_type"] == f"FLOAT[{DIM}]"
    assert "cosine" in fields["vector"]["description"]
    assert fields["id"]["is_primary"] and fields["price"]["data_type"] == "DOUBLE"


@pytest.mark.parametrize("db", ["lance", "pgv", "qdr"])
def test_hybrid_ranks_by_the_blended_vector(env: Env, db: str) -> None:
    """alpha * sim(vector) + (1 - alpha) * sim(text): the given vector is 'coffee', the text
    'boots'; numpy ranks by the same weighted sum of cosines."""
    coffee = embedder().embed(["coffee grinder"])[0].astype(np.float64)
    boots = embedder().embed(["boots"])[0].astype(np.float64)
    m = env.vectors.astype(np.float64)
    for alpha in (0.2, 0.8):
        body = {
            "intent": "hybrid",
            "text": "boots",
            "vector": coffee.tolist(),
            "alpha": alpha,
            "limit": 4,
            "with_payload": False,
        }
        got = [r["id"] for r in _dicts(env.rows(db, "products", body))]
        blended = alpha * (m @ coffee) + (1 - alpha) * (m @ boots)
        assert got == [int(i) + 1 for i in np.argsort(-blended)[:4]]


def test_search_effort_is_set_for_the_query(env: Env) -> None:
    """ef and probes run in the read's own transaction (pgvector SET LOCAL), and the answer is
    still the exact one (no index: a sequential scan)."""
    body = {"intent": "near_text", "text": "rain", "limit": 4, "ef": 64, "probes": 3}
    for db in ("pgv", "lance", "qdr"):
        got = [r["id"] for r in _dicts(env.rows(db, "products", body))]
        assert got == nearest(env, "rain", 4), db
