"""The single-step path (dashboards): stream one checked step, no DuckDB involved.

A merge costs 1-4 ms in DuckDB, so a lone step's rows go straight from the connector to the
response; the row cap (checked by GUARDRAILS, fetched as cap + 1) shows truncation.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from connectors.base import Column
from engine.catalog import DatabaseState
from engine.errors import InlineTooLarge, ServerBusy
from engine.offload import off_loop
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


class BytesInFlight:
    """Bytes of answers being built by every request of the process, at most `limit`: past
    it a request is refused at once (503 with Retry-After), never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, n: int) -> None:
        if self.used + n > self.limit and self.used > 0:
            raise ServerBusy(
                f"{self.used} bytes of answers are being built; {n} more would pass the "
                f"bound of {self.limit} (limits.max_bytes_in_flight)"
            )
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n


class InlineBudget:
    """The encoded size of a simple answer's rows, estimated as batches arrive (from a JSON
    encoding of a sample of each batch, with the column names every row object repeats), so
    a read past `limit` stops streaming at once instead of building the whole answer; the
    estimate is also held against the process's `BytesInFlight` until `release()`."""

    SAMPLE_ROWS = 64

    def __init__(self, limit: int | None, shared: BytesInFlight | None = None) -> None:
        self.limit = limit
        self.shared = shared
        self.estimate = 0

    def add(self, columns: list[Column], rows: list[tuple[Any, ...]]) -> None:
        if self.limit is None or not rows:
            return
        sample = rows[: self.SAMPLE_ROWS]
        keys = sum(len(c.name) + 4 for c in columns) + 2
        per_row = len(_SAMPLER.encode(sample)) / len(sample) + keys
        more = int(per_row * len(rows))
        if self.estimate + more > self.limit:
            raise InlineTooLarge(self.limit)
        if self.shared is not None:
            self.shared.reserve(more)
        self.estimate += more

    def release(self) -> None:
        if self.shared is not None:
            self.shared.release(self.estimate)
        self.estimate = 0


_SAMPLER = msgspec.json.Encoder(enc_hook=str)
OFF_LOOP_ROWS = 10_000  # Arrow batches larger than this become Python rows in a worker thread


def _arrow_rows(arrow: Any) -> list[tuple[Any, ...]]:
    return list(zip(*(c.to_pylist() for c in arrow.columns), strict=True))


class _Held:
    """A token of `limiter`, taken without a trip through the event loop when one is free
    (`async with limiter` always yields to the loop first: one more loop pass per lookup)."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self.limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.limiter.release()


async def run_simple(
    step: CheckedStep, state: DatabaseState, *, budget: InlineBudget | None = None
) -> StepResult:
    """Run one checked step on its database; reads stream, writes run in a transaction.

    A read whose rows would encode to more than the budget's limit is stopped with
    InlineTooLarge (the federated path stores and pages any size); the caller releases the
    budget once the answer is sent."""
    budget = budget or InlineBudget(None)
    started = time.perf_counter()
    statement = to_statement(step, batch_size=_batch_size(step))
    connector = state.connector
    async with _Held(state.limiter):
        if not step.readonly and step.operation != "SELECT":
            affected = await connector.execute_write(statement)
            return StepResult(
                columns=[], rows=[], rows_affected=affected, execution_ms=_ms(started)
            )
        columns: list[Column] = []
        rows: list[tuple[Any, ...]] = []
        batches = 0
        # the connector enforces the real timeout; asyncio's (not anyio's) costs less per lookup
        async with asyncio.timeout(step.timeout + 5):
            async for batch in connector.stream(statement):
                columns = list(batch.columns)
                batches += 1
                if batch.rows is not None:
                    got = batch.rows
                elif batch.arrow is not None:
                    if batch.arrow.num_rows > OFF_LOOP_ROWS:
                        got = await off_loop(_arrow_rows, batch.arrow)
                    else:
                        got = _arrow_rows(batch.arrow)
                else:
                    continue
                budget.add(columns, got)
                rows.extend(got)
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


# The largest batch a simple read fetches at once: the default row cap (10,000 + 1) still
# fits one round trip; a larger read comes in batches this size, because turning one batch
# into Python rows holds the event loop (a 100,000-row batch held it ~0.2 s).
SMALL_READ_ROWS = 16_384


def _batch_size(step: CheckedStep) -> int:
    """The whole capped result in one batch: the response holds every row anyway, and a
    read whose row limit fits one batch is a single round trip (no server-side cursor, which
    costs ~0.5 ms more on PostgreSQL)."""
    if step.row_cap is not None:
        return max(1, min(step.row_cap + 1, SMALL_READ_ROWS))
    return 10_000


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
