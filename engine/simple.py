"""The single-step path (dashboards): stream one checked step, no DuckDB involved.

A merge costs 1-4 ms in DuckDB, so a lone step's rows go straight from the connector to the
response; the row cap (checked by GUARDRAILS, fetched as cap + 1) shows truncation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from connectors.base import Column
from engine.catalog import DatabaseState
from engine.statements import to_statement
from safety.types import CheckedStep


@dataclass(slots=True)
class StepResult:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    rows_affected: int | None = None
    batches: int = 0
    execution_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)


async def run_simple(step: CheckedStep, state: DatabaseState) -> StepResult:
    """Run one checked step on its database; reads stream, writes run in a transaction."""
    started = time.perf_counter()
    statement = to_statement(step, batch_size=_batch_size(step))
    connector = state.connector
    async with state.limiter:
        if not step.readonly and step.operation != "SELECT":
            affected = await connector.execute_write(statement)
            return StepResult(
                columns=[], rows=[], rows_affected=affected, execution_ms=_ms(started)
            )
        columns: list[Column] = []
        rows: list[tuple[Any, ...]] = []
        batches = 0
        with anyio.fail_after(step.timeout + 5):  # the connector enforces the real timeout
            async for batch in connector.stream(statement):
                columns = list(batch.columns)
                batches += 1
                if batch.rows is not None:
                    rows.extend(batch.rows)
                elif batch.arrow is not None:
                    rows.extend(zip(*(c.to_pylist() for c in batch.arrow.columns), strict=True))
    result = StepResult(columns=columns, rows=rows, batches=batches, execution_ms=_ms(started))
    cap = step.row_cap
    if cap is not None and len(rows) > cap:
        del rows[cap:]
        result.truncated = True
        result.warnings.append(
            f"result truncated to {cap} rows (safety.max_rows_per_query); add a tighter "
            "filter or LIMIT, or use POST /v1/query to store the full result"
        )
    return result


SMALL_READ_ROWS = 100_000


def _batch_size(step: CheckedStep) -> int:
    """The whole capped result in one batch: the response holds every row anyway, and a
    read whose row limit fits one batch is a single round trip (no server-side cursor, which
    costs ~0.5 ms more on PostgreSQL)."""
    if step.row_cap is not None:
        return max(1, min(step.row_cap + 1, SMALL_READ_ROWS))
    return 10_000


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
