"""A slow sink slows the producers: rows in flight stay bounded whatever the row count."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from engine import sink as sink_module
from engine.execute import StepProgress
from engine.sink import RequestTables
from tests.engine.conftest import Run

pytestmark = [pytest.mark.postgres]


async def test_slow_sink_bounds_rows_in_flight(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    flush_rows = 500
    monkeypatch.setattr(sink_module, "FLUSH_ROWS", flush_rows)
    written = 0
    real_append = RequestTables._append

    def slow_append(
        self: RequestTables, step_id: str, pieces: list[tuple[pa.Table, list[tuple[str, str]]]]
    ) -> None:
        nonlocal written
        time.sleep(0.02)  # a slow disk (this runs in the writer's worker thread)
        real_append(self, step_id, pieces)
        written += sum(t.num_rows for t, _ in pieces)

    monkeypatch.setattr(RequestTables, "_append", slow_append)
    in_flight: list[int] = []

    def progress(e: StepProgress) -> None:
        if e.event == "batch":
            in_flight.append(e.rows - written)

    batch = 100
    query = {
        "steps": [
            {
                "step_id": "s0",
                "database": "pg",
                "table": "t",
                "query": "SELECT g AS id FROM generate_series(1, 20000) g",
            }
        ],
        "merge": "SELECT count(*) AS n FROM s0",
    }
    result = await run(query, batch_size=batch, on_progress=progress)
    assert result.rows == [{"n": 20_000}]
    # what the writer buffers (one flush) plus the bounded stream and one batch in hand
    bound = flush_rows + batch + 8 * batch + batch
    assert max(in_flight) <= bound
    assert len(in_flight) == 200
