"""A real federated-looking workload for the run manager before the federated engine lands:
each step's query runs on the test PostgreSQL database through asyncpg (no mocks), tagged with
an application_name so a test can look for it in pg_stat_activity."""

from __future__ import annotations

import time

import anyio
import asyncpg
import msgspec

from engine.ir import FederatedQuery
from engine.run_execution import RunOutcome
from engine.run_records import RunRecord
from engine.run_state import RunProgress

APP_PREFIX = "sluice_run_"


def pg_executor(dsn: str):  # type: ignore[no-untyped-def]
    async def execute(record: RunRecord, progress: RunProgress) -> RunOutcome:
        query = msgspec.json.decode(record.config, type=FederatedQuery)
        conn = await asyncpg.connect(
            dsn, server_settings={"application_name": APP_PREFIX + record.run_id[-12:]}
        )
        total = 0
        try:
            for step in query.steps:
                started = time.perf_counter()
                progress.step(step.step_id, "running")
                rows = await conn.fetch(step.query)
                total += len(rows)
                progress.step(
                    step.step_id, "completed", len(rows), (time.perf_counter() - started) * 1000
                )
                progress.records(total)
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close(timeout=5)
        return RunOutcome(records_written=total)

    return execute


def dag(*queries: str) -> str:
    """Canonical JSON of a federated query with one step per query."""
    steps = [
        {"step_id": f"s{i}", "database": "pg", "table": "t", "query": q}
        for i, q in enumerate(queries)
    ]
    return msgspec.json.encode({"steps": steps, "merge": None}).decode()


async def active_sleeps(dsn: str, run_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND state = 'active'",
                APP_PREFIX + run_id[-12:],
            )
        )
    finally:
        await conn.close()
