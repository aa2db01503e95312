"""The embedded demo answers "products like 'waterproof hiking boots' and their revenue" as one
federated query (LanceDB catalog -> SQLite order items) with no server running; checked
against numpy over the catalog's own vectors and SQLite's own sums."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import lancedb
import numpy as np

from api.local import open_service
from connectors.embedding import default as embedder
from engine.config import load_config
from engine.demo import PRODUCTS, ensure_demo
from engine.ir import decode

DEMO_QUERY = {
    "steps": [
        {
            "step_id": "similar",
            "database": "catalog",
            "table": "products",
            "query": json.dumps(
                {"intent": "near_text", "text": "waterproof hiking boots", "limit": 3}
            ),
        },
        {
            "step_id": "sales",
            "database": "shop",
            "table": "order_items",
            "query": "SELECT product_id, quantity, unit_price FROM order_items",
            "depends_on": ["similar"],
            "link_from": "id",
            "link_to": "product_id",
        },
    ],
    "merge": "SELECT s.id, s.name, s.score, sum(o.quantity * o.unit_price) AS revenue "
    "FROM similar s LEFT JOIN sales o ON o.product_id = s.id "
    "GROUP BY s.id, s.name, s.score ORDER BY s.score DESC",
}


async def test_products_like_hiking_boots_and_their_revenue(tmp_path: Path) -> None:
    config = load_config(ensure_demo(tmp_path / "demo"))
    async with open_service(config, startup_wait=120) as session:
        result = await session.federated(decode(json.dumps(DEMO_QUERY)))
    rows = result.data.rows
    # the nearest three by the catalog's own vectors, in numpy
    table = lancedb.connect(str(tmp_path / "demo" / "catalog")).open_table("products")
    catalog = table.to_arrow()
    vectors = np.array(catalog["embedding"].to_pylist(), dtype=np.float64)
    q = embedder().embed(["waterproof hiking boots"])[0].astype(np.float64)
    sims = vectors @ q / np.linalg.norm(vectors, axis=1)
    ids = catalog["id"].to_pylist()
    want = [ids[i] for i in np.argsort(-sims)[:3]]
    assert [r["id"] for r in rows] == want
    assert rows[0]["name"] == "Waterproof hiking boots"
    assert {r["name"] for r in rows} <= {name for name, _, _ in PRODUCTS}
    con = sqlite3.connect(tmp_path / "demo" / "shop.sqlite")
    try:
        for r in rows:
            (revenue,) = con.execute(
                "SELECT sum(quantity * unit_price) FROM order_items WHERE product_id = ?",
                (r["id"],),
            ).fetchone()
            assert float(r["revenue"]) == float(revenue) > 0
    finally:
        con.close()
