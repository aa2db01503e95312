"""The plan's repr is the `explain` output: kept as a snapshot file."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.ir import FederatedQuery
from engine.plan import build_plan

SNAPSHOTS = Path(__file__).parent / "snapshots"

DIAMOND = {
    "steps": [
        {"step_id": "s0", "database": "pg", "table": "customers", "query": "SELECT id FROM c"},
        {
            "step_id": "s1",
            "database": "my",
            "table": "orders",
            "query": "SELECT * FROM o",
            "depends_on": ["s0"],
            "link_from": "id",
            "link_to": "customer_id",
        },
        {
            "step_id": "s2",
            "database": "pg",
            "table": "tickets",
            "query": "SELECT * FROM t",
            "depends_on": ["s0"],
            "link_from": "id",
            "link_to": "customer_id",
        },
        {
            "step_id": "s3",
            "database": "my",
            "table": "items",
            "query": "SELECT * FROM i",
            "depends_on": ["s1", "s2"],
            "link_from": "s1.id",
            "link_to": "order_id",
        },
        {"step_id": "r", "database": "pg", "table": "rates", "query": "SELECT * FROM r"},
    ],
    "merge": "SELECT * FROM s0 JOIN s1 ON s0.id = s1.customer_id JOIN s3 ON s3.order_id = s1.id"
    " JOIN s2 ON s2.customer_id = s0.id, r",
}


def test_explain_snapshot() -> None:
    plan = build_plan(msgspec.convert(DIAMOND, FederatedQuery), {"pg", "my"})
    assert plan.roots == ("s0", "r") or set(plan.roots) == {"s0", "r"}
    assert plan.dag["s3"] == {"s1", "s2"}
    assert plan.nodes["s3"].waits_for == ("s2",)
    expected = (SNAPSHOTS / "plan_diamond.txt").read_text()
    assert repr(plan) + "\n" == expected


def test_stripped_step_drops_its_dependants() -> None:
    plan = build_plan(
        msgspec.convert(DIAMOND, FederatedQuery), {"pg", "my"}, keep={"s0", "s1", "s3", "r"}
    )
    assert set(plan.nodes) == {"s0", "s1", "r"}
    assert set(plan.dropped) == {"s2", "s3"}
    assert plan.nodes["s0"].children == ["s1"]
