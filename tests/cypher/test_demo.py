"""The embedded demo's graph: who referred which customer (a ladybug file), joined with the
shop's orders (SQLite) with no server running, checked against the join computed from the
two files directly."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import ladybug
import msgspec

from api.envelopes import QuerySuccess
from api.local import open_service
from engine.config import load_config
from engine.demo import ensure_demo
from engine.ir import FederatedQuery

REVENUE_OF_REFERRED = {
    "steps": [
        {"step_id": "r", "database": "referrals", "table": "Customer",
         "query": "MATCH (a:Customer)-[:REFERRED]->(b:Customer) "
                  "RETURN a.id AS referrer, b.id AS customer_id"},
        {"step_id": "o", "database": "shop", "table": "orders",
         "query": "SELECT customer_id, total FROM orders WHERE status <> 'refunded'",
         "depends_on": ["r"], "link_from": "customer_id", "link_to": "customer_id"},
    ],
    "merge": "SELECT r.referrer, sum(o.total) AS revenue FROM r JOIN o USING (customer_id) "
             "GROUP BY r.referrer ORDER BY revenue DESC, r.referrer LIMIT 10",
}  # fmt: skip


async def test_demo_graph_joins_the_shop(tmp_path: Path) -> None:
    config_path = ensure_demo(tmp_path / "demo")
    config = load_config(config_path)
    async with open_service(config) as session:
        result = await session.federated(msgspec.convert(REVENUE_OF_REFERRED, FederatedQuery))
    assert isinstance(result, QuerySuccess)

    db = ladybug.Database(str(tmp_path / "demo" / "referrals.lbug"), read_only=True)
    con = ladybug.Connection(db)
    edges = con.execute("MATCH (a:Customer)-[:REFERRED]->(b:Customer) RETURN a.id, b.id").get_all()
    con.close()
    db.close()
    shop = sqlite3.connect(tmp_path / "demo" / "shop.sqlite")
    totals: dict[int, Decimal] = {}
    for customer, total in shop.execute(
        "SELECT customer_id, CAST(total AS TEXT) FROM orders WHERE status <> 'refunded'"
    ):
        totals[customer] = totals.get(customer, Decimal(0)) + Decimal(total)
    shop.close()
    revenue: dict[int, Decimal] = {}
    for referrer, customer in edges:
        if customer in totals:
            revenue[referrer] = revenue.get(referrer, Decimal(0)) + totals[customer]
    expected = sorted(revenue.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert len(edges) > 100 and expected
    got = [(r["referrer"], Decimal(str(r["revenue"]))) for r in result.data.rows]
    assert got == expected
