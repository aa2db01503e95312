"""The result store: stable pages, 404 once unknown or expired, eviction oldest first."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from engine import results
from engine.errors import ResultNotFound
from engine.results import DiskResultStore


def table(n: int, offset: int = 0) -> pa.Table:
    return pa.table(
        {
            "i": pa.array(range(offset, offset + n), pa.int64()),
            "s": pa.array([f"v{k}" for k in range(offset, offset + n)]),
        }
    )


def test_pages_are_stable_slices(tmp_path: Path) -> None:
    store = DiskResultStore(tmp_path, row_group_rows=7)
    stored = store.store_table("req_a", table(25), head_rows=3)
    assert stored.total == 25
    assert stored.head == [{"i": 0, "s": "v0"}, {"i": 1, "s": "v1"}, {"i": 2, "s": "v2"}]
    seen = []
    page = 1
    while True:
        p = store.page_sync("req_a", page, 10)
        seen.extend(r["i"] for r in p.rows)
        assert p.total == 25
        if not p.has_more:
            break
        page += 1
    assert seen == list(range(25))
    assert store.page_sync("req_a", 4, 10).rows == []


def test_spilled_results_read_only_their_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "MEMORY_BYTES", 0)  # force the on-disk path
    store = DiskResultStore(tmp_path, row_group_rows=100)
    store.store_table("req_b", table(1000), head_rows=0)
    p = store.page_sync("req_b", 3, 150)  # rows 300..449 span row groups 3 and 4
    assert [r["i"] for r in p.rows] == list(range(300, 450))
    # another process (a fresh store over the same folder) pages it from the file
    other = DiskResultStore(tmp_path)
    assert [r["i"] for r in other.page_sync("req_b", 7, 150).rows] == list(range(900, 1000))


def test_duplicate_merge_columns_get_unique_names(tmp_path: Path) -> None:
    store = DiskResultStore(tmp_path)
    t = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["id", "id"])
    stored = store.store_table("req_c", t, head_rows=5)
    assert stored.columns == ["id", "id_2"]
    assert stored.head == [{"id": 1, "id_2": 2}]


def test_unknown_and_expired(tmp_path: Path) -> None:
    store = DiskResultStore(tmp_path, ttl=0.2)
    with pytest.raises(ResultNotFound):
        store.page_sync("req_nope", 1, 10)
    with pytest.raises(ResultNotFound):
        store.page_sync("../etc/passwd", 1, 10)
    store.store_table("req_d", table(3), head_rows=0)
    assert store.page_sync("req_d", 1, 10).total == 3
    time.sleep(0.3)
    with pytest.raises(ResultNotFound):
        store.page_sync("req_d", 1, 10)
    assert not (tmp_path / "req_d.parquet").exists()


def test_eviction_by_count_and_bytes_oldest_first(tmp_path: Path) -> None:
    store = DiskResultStore(tmp_path, max_results=2)
    for rid in ("req_1", "req_2", "req_3"):
        store.store_table(rid, table(10), head_rows=0)
    with pytest.raises(ResultNotFound):
        store.page_sync("req_1", 1, 10)
    assert store.page_sync("req_3", 1, 10).total == 10
    one = (tmp_path / "req_3.parquet").stat().st_size
    by_bytes = DiskResultStore(tmp_path / "b", max_bytes=int(one * 2.5))
    for rid in ("req_1", "req_2", "req_3"):
        by_bytes.store_table(rid, table(10), head_rows=0)
    assert len(by_bytes) == 2
    with pytest.raises(ResultNotFound):
        by_bytes.page_sync("req_1", 1, 10)
    assert by_bytes.page_sync("req_2", 1, 10).total == 10


async def test_async_page(tmp_path: Path) -> None:
    store = DiskResultStore(tmp_path)
    store.store_table("req_e", table(5), head_rows=0)
    page = await store.page("req_e", 2, 2)
    assert [r["i"] for r in page.rows] == [2, 3]
    assert page.has_more
