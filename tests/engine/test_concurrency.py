"""Many requests at once share the one DuckDB sink, each in its own schema."""

from __future__ import annotations

import anyio
import duckdb
import pytest

from engine.sink import Sink
from safety.config import SafetyConfig
from tests.engine.conftest import Run
from tests.engine.support import expected, same_rows

pytestmark = [pytest.mark.postgres, pytest.mark.sqlite, pytest.mark.duckdb]


async def test_concurrent_requests_do_not_mix(
    run: Run, sink: Sink, reference: duckdb.DuckDBPyConnection
) -> None:
    results: dict[int, list[dict[str, object]]] = {}

    async def one(k: int) -> None:
        query = {
            "steps": [
                {
                    "step_id": "c",
                    "database": "pg",
                    "table": "customers",
                    "query": f"SELECT id, region FROM eng.customers WHERE id % 8 = {k}",
                },
                {
                    "step_id": "i",
                    "database": "lite",
                    "table": "items",
                    "query": "SELECT order_id, qty FROM items",
                    "depends_on": ["c"],
                    "link_from": "id",
                    "link_to": "order_id",
                },
                {
                    "step_id": "r",
                    "database": "duck",
                    "table": "regions",
                    "query": "SELECT region, rate FROM regions",
                },
            ],
            "merge": "SELECT c.id, sum(i.qty * r.rate) AS w FROM c JOIN i ON i.order_id = c.id "
            "JOIN r USING (region) GROUP BY c.id",
        }
        result = await run(
            query, safety=SafetyConfig(max_link_values_per_batch=10), check_schemas=False
        )
        results[k] = result.rows

    async with anyio.create_task_group() as tg:
        for k in range(8):
            tg.start_soon(one, k)
    for k in range(8):
        want = expected(
            reference,
            f"""
            SELECT c.id, sum(i.qty * r.rate) AS w FROM customers c
            JOIN items i ON i.order_id = c.id JOIN regions r USING (region)
            WHERE c.id % 8 = {k} GROUP BY c.id""",
        )
        assert want and same_rows(results[k], want)
    assert sink.schemas() == []
