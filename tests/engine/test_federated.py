"""Federated queries end to end over real PostgreSQL, MariaDB, SQLite and DuckDB files.

Every result is compared with the same join computed directly in DuckDB over the source
rows (the `reference` fixture), never with hard-coded numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import asyncpg
import duckdb
import msgspec
import pytest

from connectors.base import Connector
from engine.errors import MergeBlocked, StepFailed, StepUnknownDatabase
from engine.execute import StepProgress
from engine.ir import FederatedQuery
from engine.results import ResultStore
from safety.config import SafetyConfig
from tests.engine.conftest import Run
from tests.engine.support import Calls, checked, expected, recording, same_rows
from tests.servers import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sqlite, pytest.mark.duckdb]


def step(sid: str, db: str, table: str, query: str, **kw: Any) -> dict[str, Any]:
    return {"step_id": sid, "database": db, "table": table, "query": query, **kw}


async def test_two_steps_linked_pg_to_mariadb(
    run: Run, reference: duckdb.DuckDBPyConnection, store: ResultStore
) -> None:
    query = {
        "steps": [
            step(
                "s0",
                "pg",
                "customers",
                "SELECT id, name, region FROM eng.customers WHERE region IN ('north', 'east')",
            ),
            step(
                "s1",
                "my",
                "eng_orders",
                "SELECT id, customer_id, amount FROM eng_orders",
                depends_on=["s0"],
                link_from="id",
                link_to="customer_id",
            ),
        ],
        "merge": "SELECT s0.name, s0.region, s1.id AS order_id, s1.amount FROM s0 "
        "JOIN s1 ON s0.id = s1.customer_id ORDER BY s1.id",
    }
    result = await run(query, safety=SafetyConfig(inline_rows=50))
    want = expected(
        reference,
        """
        SELECT c.name, c.region, o.id AS order_id, o.amount FROM customers c
        JOIN orders o ON c.id = o.customer_id WHERE c.region IN ('north', 'east')
        ORDER BY o.id""",
    )
    assert result.row_count == len(want) > 50
    assert result.columns == ["name", "region", "order_id", "amount"]
    assert result.rows == want[:50]  # the merge's order, inline
    assert result.truncated
    # the whole result, paged in the same order
    pages = []
    for page in range(1, result.result_pages.total_pages + 1):  # type: ignore[union-attr]
        pages.extend((await store.page(result.request_id, page, 100)).rows)
    assert pages == want
    s0, s1 = result.steps
    assert s0.rows_returned == len(
        expected(reference, "SELECT id FROM customers WHERE region IN ('north', 'east')")
    )
    assert s1.strategy == "link" and s1.native_queries >= 1
    assert s1.rows_returned == len(
        expected(
            reference,
            """
        SELECT id FROM orders WHERE customer_id IN
        (SELECT id FROM customers WHERE region IN ('north', 'east'))""",
        )
    )
    assert result.merge_latency_ms is not None and result.merge_latency_ms > 0
    assert all(s.status == "ok" and s.first_batch_ms is not None for s in result.steps)


async def test_three_databases_chain_plus_independent_root(
    run: Run, reference: duckdb.DuckDBPyConnection
) -> None:
    query = {
        "steps": [
            step("c", "pg", "customers", "SELECT id, region FROM eng.customers WHERE id <= 120"),
            step(
                "o",
                "my",
                "eng_orders",
                "SELECT id, customer_id FROM eng_orders",
                depends_on=["c"],
                link_from="id",
                link_to="customer_id",
            ),
            step(
                "i",
                "lite",
                "items",
                "SELECT order_id, sku, qty FROM items",
                depends_on=["o"],
                link_from="id",
                link_to="order_id",
            ),
            step("r", "duck", "regions", "SELECT region, rate FROM regions"),
        ],
        "merge": """SELECT c.region, i.sku, sum(i.qty * r.rate) AS weighted, count(*) AS n
                    FROM c JOIN o ON o.customer_id = c.id JOIN i ON i.order_id = o.id
                    JOIN r ON r.region = c.region GROUP BY ALL""",
    }
    result = await run(query, safety=SafetyConfig(max_link_values_per_batch=25))
    want = expected(
        reference,
        """
        SELECT c.region, i.sku, sum(i.qty * r.rate) AS weighted, count(*) AS n
        FROM customers c JOIN orders o ON o.customer_id = c.id JOIN items i ON i.order_id = o.id
        JOIN regions r ON r.region = c.region WHERE c.id <= 120 GROUP BY ALL""",
    )
    assert want and same_rows(result.rows, want)
    by_id = {s.step_id: s for s in result.steps}
    assert by_id["r"].strategy == "root" and by_id["i"].strategy == "link"
    assert by_id["o"].native_queries >= math.ceil(120 / 25)


async def test_diamond_with_uuid_link(run: Run, reference: duckdb.DuckDBPyConnection) -> None:
    query = {
        "steps": [
            step(
                "s0",
                "pg",
                "customers",
                "SELECT id, uid, region FROM eng.customers WHERE balance > 0",
            ),
            step(
                "s1",
                "my",
                "eng_orders",
                "SELECT id, customer_id, amount FROM eng_orders",
                depends_on=["s0"],
                link_from="id",
                link_to="customer_id",
            ),
            step(
                "s2",
                "pg",
                "tickets",
                "SELECT id, customer_uid, opened FROM eng.tickets",
                depends_on=["s0"],
                link_from="uid",
                link_to="customer_uid",
            ),
            step(
                "s3",
                "lite",
                "items",
                "SELECT order_id, qty FROM items",
                depends_on=["s1", "s2"],
                link_from="s1.id",
                link_to="order_id",
            ),
        ],
        "merge": """SELECT s0.region, count(DISTINCT s1.id) AS orders,
                      count(DISTINCT s2.id) AS tickets, sum(s3.qty) AS qty
                    FROM s0 JOIN s1 ON s1.customer_id = s0.id
                    JOIN s2 ON s2.customer_uid = s0.uid
                    JOIN s3 ON s3.order_id = s1.id GROUP BY s0.region""",
    }
    result = await run(query, safety=SafetyConfig(max_link_values_per_batch=40))
    want = expected(
        reference,
        """
        SELECT c.region, count(DISTINCT o.id) AS orders, count(DISTINCT t.id) AS tickets,
          sum(i.qty) AS qty
        FROM customers c JOIN orders o ON o.customer_id = c.id
        JOIN tickets t ON t.customer_uid = c.uid JOIN items i ON i.order_id = o.id
        WHERE c.balance > 0 GROUP BY c.region""",
    )
    assert want and same_rows(result.rows, want)
    s2 = next(s for s in result.steps if s.step_id == "s2")
    assert s2.rows_returned == len(
        expected(
            reference,
            """
        SELECT t.id FROM tickets t WHERE t.customer_uid IN
        (SELECT uid FROM customers WHERE balance > 0)""",
        )
    )


async def test_empty_parent_never_runs_the_child_unfiltered(
    run: Run, connectors: dict[str, Connector]
) -> None:
    calls = Calls()
    recording(connectors["my"], calls)
    query = {
        "steps": [
            step("s0", "pg", "customers", "SELECT id FROM eng.customers WHERE id < 0"),
            step(
                "s1",
                "my",
                "eng_orders",
                "SELECT id, customer_id, amount FROM eng_orders",
                depends_on=["s0"],
                link_from="id",
                link_to="customer_id",
            ),
        ],
        "merge": "SELECT * FROM s1",
    }
    result = await run(query)
    assert result.row_count == 0 and result.rows == []
    assert result.columns == ["id", "customer_id", "amount"]  # the table kept its columns
    s1 = result.steps[1]
    assert s1.rows_returned == 0 and s1.native_queries == 0
    for _, _, text, _ in calls.streams():  # only the probe that cannot return rows
        assert "1 = 0" in text


async def test_null_and_duplicate_link_values_are_sent_once(
    run: Run, connectors: dict[str, Connector], reference: duckdb.DuckDBPyConnection
) -> None:
    calls = Calls()
    recording(connectors["pg"], calls)
    query = {
        "steps": [
            step("o", "my", "eng_orders", "SELECT id, customer_id FROM eng_orders"),
            step(
                "c",
                "pg",
                "customers",
                "SELECT id, name, balance FROM eng.customers",
                depends_on=["o"],
                link_from="customer_id",
                link_to="id",
            ),
        ],
        "merge": "SELECT * FROM c",
    }
    result = await run(query, safety=SafetyConfig(max_link_values_per_batch=7), batch_size=50)
    want = expected(
        reference,
        "SELECT id, name, balance FROM customers WHERE id IN (SELECT customer_id FROM orders)",
    )
    assert same_rows(result.rows, want)
    sent = [v for link in calls.links() for v in link.values]
    distinct = expected(
        reference, "SELECT DISTINCT customer_id FROM orders WHERE customer_id IS NOT NULL"
    )
    assert None not in sent
    assert len(sent) == len(set(sent)) == len(distinct)  # every value once, NULL never
    assert all(len(link.values) <= 7 for link in calls.links())
    assert all(list(link.values) == sorted(link.values) for link in calls.links())
    assert all(link.type == "BIGINT" for link in calls.links())
    assert result.steps[1].native_queries == len(calls.links()) >= math.ceil(len(sent) / 7)
    assert result.row_count == len(want)


async def test_mixed_types_survive(run: Run, reference: duckdb.DuckDBPyConnection) -> None:
    query = {
        "steps": [
            step(
                "c",
                "pg",
                "customers",
                "SELECT id, balance, created, uid, meta FROM eng.customers WHERE id <= 80",
            ),
            step(
                "o",
                "my",
                "eng_orders",
                "SELECT customer_id, amount, placed FROM eng_orders",
                depends_on=["c"],
                link_from="id",
                link_to="customer_id",
            ),
        ],
        "merge": """SELECT c.id, c.balance, c.created, c.uid, c.meta->>'$.tier' AS tier,
                      o.amount, o.placed, typeof(c.balance) AS tb, typeof(c.created) AS tc,
                      typeof(c.uid) AS tu
                    FROM c JOIN o ON o.customer_id = c.id""",
    }
    result = await run(query)
    want = expected(
        reference,
        """
        SELECT c.id, c.balance, c.created, c.uid, c.meta->>'$.tier' AS tier, o.amount,
          o.placed, typeof(c.balance) AS tb, typeof(c.created) AS tc, typeof(c.uid) AS tu
        FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id <= 80""",
    )
    assert want and same_rows(result.rows, want)
    assert {(r["tb"], r["tc"], r["tu"]) for r in result.rows} == {
        ("DECIMAL(12,2)", "TIMESTAMP WITH TIME ZONE", "UUID")
    }


async def test_more_link_values_than_the_scan_threshold(
    run: Run, connectors: dict[str, Connector], reference: duckdb.DuckDBPyConnection
) -> None:
    """Past `full_scan_after` distinct values the child scans once, filtered locally."""
    calls = Calls()
    recording(connectors["lite"], calls)
    query = {
        "steps": [
            step("o", "my", "eng_orders", "SELECT id FROM eng_orders WHERE id % 3 = 0"),
            step(
                "i",
                "lite",
                "items",
                "SELECT id, order_id, qty FROM items",
                depends_on=["o"],
                link_from="id",
                link_to="order_id",
            ),
        ],
        "merge": "SELECT * FROM i",
    }
    result = await run(
        query,
        safety=SafetyConfig(max_link_values_per_batch=20, inline_rows=100_000),
        full_scan_after=60,
        batch_size=40,
    )
    want = expected(
        reference,
        "SELECT id, order_id, qty FROM items WHERE order_id IN "
        "(SELECT id FROM orders WHERE id % 3 = 0)",
    )
    assert result.row_count == len(want)
    assert same_rows(result.rows, want)
    i = result.steps[1]
    assert i.strategy == "link+scan"
    assert len(calls.links()) < math.ceil(500 / 20)  # far fewer than one query per chunk
    scans = [t for _, _, t, _ in calls.streams() if t == "SELECT id, order_id, qty FROM items"]
    assert len(scans) == 1  # the one unfiltered scan


async def test_row_cap_truncates_and_warns(run: Run) -> None:
    query = {"steps": [step("s0", "pg", "customers", "SELECT id FROM eng.customers")]}
    q = msgspec.convert(query, FederatedQuery)
    result = await run(q, checked_steps=checked(q, row_cap=100))
    assert result.row_count == 100
    assert result.steps[0].status == "truncated"
    assert any("step s0 returned more than 100 rows" in w for w in result.warnings)


async def test_merge_reading_a_file_is_blocked_before_anything_runs(
    run: Run, connectors: dict[str, Connector]
) -> None:
    calls = Calls()
    recording(connectors["pg"], calls)
    query = {
        "steps": [step("s0", "pg", "customers", "SELECT id FROM eng.customers")],
        "merge": "SELECT * FROM read_csv('/etc/passwd')",
    }
    with pytest.raises(MergeBlocked, match="READ_CSV"):
        await run(query)
    assert calls.events == []


async def test_unknown_database_names_the_step(run: Run) -> None:
    query = {"steps": [step("s0", "nowhere", "t", "SELECT 1")]}
    with pytest.raises(StepUnknownDatabase, match="step 's0'"):
        await run(query)


async def test_failing_step_cancels_the_others(run: Run, pg_data: PgServer) -> None:
    marker = "sluice_cancel_probe"
    query = {
        "steps": [
            step(
                "bad",
                "pg",
                "customers",
                "SELECT g AS id, 1 / (g - 30000) AS x FROM generate_series(1, 100000) g",
            ),
            step("slow", "pg", "customers", f"SELECT /* {marker} */ pg_sleep(20) AS slept"),
            step("slow_my", "my", "eng_orders", "SELECT SLEEP(20) AS slept"),
        ],
        "merge": "SELECT * FROM bad, slow, slow_my",
    }
    started = time.perf_counter()
    with pytest.raises(StepFailed) as info:
        await run(query, batch_size=1000)
    assert time.perf_counter() - started < 10  # the sleeping steps were cancelled
    err = info.value
    assert err.step_id == "bad" and err.code == "step_failed"
    assert "division by zero" in err.message and "'bad'" in err.message

    async def running() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(pg_data.dsn)
        try:
            return await conn.fetch(
                "SELECT pid, query FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
        finally:
            await conn.close()

    for _ in range(40):  # the server-side cancel takes a moment to land
        if not await running():
            break
        await anyio.sleep(0.05)
    assert await running() == []


async def test_child_starts_before_the_parent_finishes(
    run: Run, connectors: dict[str, Connector]
) -> None:
    calls = Calls()
    recording(connectors["lite"], calls)
    events: list[tuple[float, StepProgress]] = []
    query = {
        "steps": [
            # rows trickle out: each one sleeps 40 ms on the server
            step(
                "p",
                "pg",
                "customers",
                "SELECT g AS id, pg_sleep(0.04) AS s FROM generate_series(1, 30) g",
            ),
            step(
                "c",
                "lite",
                "items",
                "SELECT id, order_id FROM items",
                depends_on=["p"],
                link_from="id",
                link_to="order_id",
            ),
        ],
        "merge": "SELECT count(*) AS n FROM c",
    }
    q = msgspec.convert(query, FederatedQuery)
    result = await run(
        q,
        checked_steps=checked(q, row_cap=1000),
        batch_size=3,
        on_progress=lambda e: events.append((time.perf_counter(), e)),
    )
    parent_batches = [t for t, e in events if e.step_id == "p" and e.event == "batch"]
    child_queries = [t for t, _, _, link in calls.events if link is not None]
    assert len(parent_batches) == 10
    assert child_queries and child_queries[0] < parent_batches[-1] - 0.1
    assert result.steps[1].native_queries >= 2  # several chunks, as values arrived
