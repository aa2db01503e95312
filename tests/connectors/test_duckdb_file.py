"""DuckDB file quirks."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import duckdb
import pytest

from connectors.base import Statement
from connectors.duckdb_file import DuckDBConnector
from connectors.registry import database_config

pytestmark = pytest.mark.duckdb


@pytest.mark.timeout(20)  # the bug blocks a worker thread, which fail_after cannot cancel
async def test_write_after_a_read_cut_at_max_rows_does_not_wait_for_gc(tmp_path: Path) -> None:
    """A read that stops at max_rows must release its reader at once: an unfinished reader
    keeps the read-only database open, and the write would block until a GC pass."""
    path = tmp_path / "d.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE items AS SELECT range AS id FROM range(150)")
    con.close()
    connector = DuckDBConnector(database_config(name="d", type="duckdb", path=str(path)))
    await connector.open()
    gc.disable()
    try:
        got = [
            b
            async for b in connector.stream(
                Statement(text="SELECT id FROM items", max_rows=101, batch_size=50)
            )
        ]
        assert sum(len(b) for b in got) == 101
        with anyio.fail_after(10):
            affected = await connector.execute_write(
                Statement(text="DELETE FROM items WHERE id >= 100", readonly=False)
            )
        assert affected == 50
    finally:
        gc.enable()
        await connector.close()
