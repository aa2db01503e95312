"""`limits.memory_budget` and friends: read from sluice.yaml, split into DuckDB's limits."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.config import load_config_text
from engine.errors import ConfigError
from engine.memory import MIN_GRANT, MiB, Shares, parse_size
from engine.runtime import build_sink


def setting(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    cur = conn.cursor()
    try:
        return str(cur.execute(f"SELECT current_setting('{name}')").fetchall()[0][0])
    finally:
        cur.close()


def test_the_budget_sizes_the_sink_the_pool_and_the_spill_threshold(tmp_path: Path) -> None:
    text = f"""
server: {{data_dir: "{tmp_path}"}}
limits: {{memory_budget: 1GiB, merge_temp_limit: 4GiB, merge_memory_limit: 300MiB}}
"""
    sink = build_sink(load_config_text(text, "t.yaml", {}))
    try:
        assert sink.spill is not None and sink.pool is not None
        # a quarter for the process, of the rest a quarter for the shared sink
        assert setting(sink.conn, "memory_limit") == "192.0 MiB"
        assert sink.pool.total == 576 * MiB and sink.pool.cap == 300 * MiB
        assert sink.spill.spill_after == 48 * MiB
        # disk: a quarter for the shared DuckDB's temp files, the rest for spilled steps
        assert setting(sink.conn, "max_temp_directory_size") == "1.0 GiB"
        assert sink.spill.disk.limit == 3 * 1024**3
        assert sink.spill.root.parent == tmp_path / "spill"
        # never more than the budget in sum: the process's quarter, the sink, the pool
        assert 1024**3 // 4 + 192 * MiB + sink.pool.total == 1024**3
    finally:
        sink.close()


def test_spill_after_bytes_overrides_the_threshold(tmp_path: Path) -> None:
    text = f"""
server: {{data_dir: "{tmp_path}"}}
limits: {{memory_budget: 2GB, spill_after_bytes: 1000}}
"""
    sink = build_sink(load_config_text(text, "t.yaml", {}))
    try:
        assert sink.spill is not None and sink.spill.spill_after == 1000
    finally:
        sink.close()


@pytest.mark.parametrize("key", ["memory_budget", "merge_memory_limit", "merge_temp_limit"])
def test_a_size_that_is_not_one_fails_at_start_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f"limits:\n  {key}: lots\n", "t.yaml", {})
    assert f"limits.{key}" in str(info.value) and "line 2" in str(info.value)


def test_sizes_read_as_duckdb_reads_them() -> None:
    assert parse_size("1GB") == 10**9 and parse_size("1GiB") == 1024**3
    assert parse_size("512 MiB") == 512 * MiB and parse_size("2g") == 2 * 10**9
    assert parse_size("100") == 100
    with pytest.raises(ValueError):
        parse_size("-1GB")


def test_a_tiny_budget_still_leaves_every_share_usable() -> None:
    shares = Shares.of(100 * MiB)
    assert shares.sink >= MIN_GRANT and shares.pool >= MIN_GRANT
    assert shares.merge_cap == shares.pool and shares.spill_after >= MiB
