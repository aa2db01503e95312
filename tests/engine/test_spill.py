"""Steps spilled to Parquet, over real PostgreSQL, MariaDB, SQLite and DuckDB files.

Each spilled answer is compared with the same request run through the in-memory sink (the
`run` fixture of conftest), never with hard-coded numbers; the spill folder and the disk and
memory budgets are checked to be empty again after success, error and cancel.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import duckdb
import msgspec
import pytest

from connectors.base import Batch, Column, Connector
from engine.errors import MergeFailed, SpillLimitExceeded, StepFailed
from engine.federated import FederatedResult, run_federated
from engine.ir import FederatedQuery
from engine.memory import MIN_GRANT, MemoryPool, MiB
from engine.results import ResultStore
from engine.sink import Sink
from engine.spill import SpillArea
from safety.config import SafetyConfig
from tests.engine.conftest import Run
from tests.engine.support import checked, checked_plan, same_rows

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sqlite, pytest.mark.duckdb]

BIG_ROWS = 150_000  # past FLUSH_ROWS, so rows appended in DuckDB first are moved to Parquet
BIG = (
    f"SELECT g AS id, g % 300 + 1 AS customer_id, (g % 3000) + 1 AS order_id, "
    f"md5(g::text) AS note, (g % 997)::numeric(12,2) AS amount "
    f"FROM generate_series(1, {BIG_ROWS}) g"
)


def step(sid: str, db: str, table: str, query: str, **kw: Any) -> dict[str, Any]:
    return {"step_id": sid, "database": db, "table": table, "query": query, **kw}


class Spilling:
    """A sink that spills past `spill_after` bytes, with its own area and merge pool."""

    def __init__(
        self, root: Path, *, spill_after: int, disk: int = 2 * 1024**3, pool: int = 4 * MIN_GRANT
    ) -> None:
        self.area = SpillArea(root, disk, spill_after)
        self.pool = MemoryPool(pool, pool)
        self.sink = Sink(threads=2, memory_limit="512MB", spill=self.area, pool=self.pool)
        self.counter = 0

    def assert_clean(self) -> None:
        assert self.area.leftovers() == [], "every spill folder must be removed"
        assert self.area.disk.used == 0, "every spilled byte must be given back"
        assert self.pool.in_use == 0, "every memory grant must be given back"
        assert self.sink.schemas() == [], "the request's schema must be dropped"

    async def run(
        self,
        query: Mapping[str, Any],
        connectors: Mapping[str, Connector],
        store: ResultStore,
        **kwargs: Any,
    ) -> FederatedResult:
        q = msgspec.convert(query, FederatedQuery)
        self.counter += 1
        return await run_federated(
            checked_plan(q, checked(q, row_cap=None), connectors),
            connectors,
            sink=self.sink,
            store=store,
            safety=kwargs.pop("safety", SafetyConfig()),
            request_id=f"req_spill{self.counter:08x}",
            **kwargs,
        )


@pytest.fixture
def spilling(tmp_path: Path) -> Iterator[Spilling]:
    s = Spilling(tmp_path / "spill", spill_after=1)
    yield s
    s.sink.close()


def mixed_query() -> dict[str, Any]:
    """Every kind of column (UUID, JSON, DECIMAL, TIMESTAMPTZ, text) through four databases,
    two steps linked from a spilled parent."""
    return {
        "steps": [
            step(
                "c",
                "pg",
                "customers",
                "SELECT id, region, balance, created, uid, meta FROM eng.customers",
            ),
            step(
                "o",
                "my",
                "eng_orders",
                "SELECT id, customer_id, amount, placed FROM eng_orders",
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
        "merge": """SELECT c.id, c.balance, c.created, c.uid, c.meta->>'$.tier' AS tier,
                      o.amount, o.placed, i.sku, i.qty * r.rate AS weighted,
                      typeof(c.balance) AS tb, typeof(c.created) AS tc, typeof(c.uid) AS tu,
                      typeof(c.meta) AS tm
                    FROM c JOIN o ON o.customer_id = c.id JOIN i ON i.order_id = o.id
                    JOIN r ON r.region = c.region ORDER BY ALL""",
    }


async def test_spilled_steps_give_the_in_memory_answer(
    run: Run,
    spilling: Spilling,
    connectors: dict[str, Connector],
    store: ResultStore,
) -> None:
    safety = SafetyConfig(max_link_values_per_batch=40)
    want = await run(mixed_query(), safety=safety)
    got = await spilling.run(mixed_query(), connectors, store, safety=safety)
    assert got.memory is not None and want.memory is not None
    assert sorted(got.memory.spilled_steps) == ["c", "i", "o", "r"]
    assert want.memory.spilled_steps == []  # the conftest sink has no spill area
    assert got.memory.spilled_bytes > 0 and got.memory.merge_memory_limit_bytes == 4 * MIN_GRANT
    assert got.row_count == want.row_count > 0
    assert same_rows(got.rows, want.rows)
    assert {(r["tb"], r["tc"], r["tu"], r["tm"]) for r in got.rows} == {
        ("DECIMAL(12,2)", "TIMESTAMP WITH TIME ZONE", "UUID", "JSON")
    }
    # linked children were fed while their parents streamed to Parquet
    by_id = {s.step_id: s for s in got.steps}
    assert by_id["o"].strategy == "link" and by_id["o"].native_queries > 1
    assert got.memory.peak_rss_bytes > 0
    spilling.assert_clean()


async def test_a_step_past_the_threshold_moves_to_parquet(
    run: Run, tmp_path: Path, connectors: dict[str, Connector], store: ResultStore
) -> None:
    """Only the large step spills: its first FLUSH_ROWS rows were appended in DuckDB, then
    moved; its linked child (SQLite) and the small step stay in the sink and are copied
    into the merge's own DuckDB."""
    query = {
        "steps": [
            step("big", "pg", "customers", BIG),
            step(
                "i",
                "lite",
                "items",
                "SELECT order_id, sku, qty FROM items",
                depends_on=["big"],
                link_from="order_id",
                link_to="order_id",
            ),
            step("r", "duck", "regions", "SELECT region, rate FROM regions"),
        ],
        "merge": """SELECT i.sku, count(*) AS n, sum(big.amount) AS amount,
                      count(DISTINCT big.note) AS notes, max(r.rate) AS rate
                    FROM big JOIN i USING (order_id) CROSS JOIN (SELECT max(rate) AS rate
                    FROM r) r GROUP BY i.sku""",
    }
    spilling = Spilling(tmp_path / "spill", spill_after=4 * MiB)
    try:
        got = await spilling.run(query, connectors, store, batch_size=5_000)
        q = msgspec.convert(query, FederatedQuery)
        want = await run(query, checked_steps=checked(q, row_cap=None))
        assert got.memory is not None
        assert got.memory.spilled_steps == ["big"]
        by_id = {s.step_id: s for s in got.steps}
        assert by_id["big"].rows_returned == BIG_ROWS
        assert by_id["i"].strategy == "link"
        assert got.row_count == want.row_count > 0
        assert same_rows(got.rows, want.rows)
        spilling.assert_clean()
    finally:
        spilling.sink.close()


async def test_spill_files_are_gone_after_a_failed_step(
    spilling: Spilling, connectors: dict[str, Connector], store: ResultStore
) -> None:
    query = {
        "steps": [
            step("big", "pg", "customers", BIG),
            # runs once big has finished (and spilled), then fails
            step("bad", "pg", "customers", "SELECT 1 / 0 AS x", depends_on=["big"]),
        ],
        "merge": "SELECT count(*) FROM big, bad",
    }
    with pytest.raises(StepFailed) as info:
        await spilling.run(query, connectors, store)
    assert info.value.step_id == "bad"
    spilling.assert_clean()


async def test_spill_files_are_gone_after_a_failed_merge(
    spilling: Spilling, connectors: dict[str, Connector], store: ResultStore
) -> None:
    query = {
        "steps": [step("big", "pg", "customers", BIG)],
        "merge": "SELECT CAST(note AS INTEGER) AS n FROM big",
    }
    with pytest.raises(MergeFailed):
        await spilling.run(query, connectors, store)
    spilling.assert_clean()


async def test_spill_files_are_gone_after_cancel(
    spilling: Spilling, connectors: dict[str, Connector], store: ResultStore
) -> None:
    query = {
        "steps": [
            step("big", "pg", "customers", BIG),
            step("slow", "pg", "customers", "SELECT pg_sleep(30) AS slept"),
        ],
        "merge": "SELECT count(*) FROM big, slow",
    }
    seen_files: list[Path] = []
    with anyio.move_on_after(60) as timeout:
        async with anyio.create_task_group() as tg:
            tg.start_soon(spilling.run, query, connectors, store)
            while not seen_files:  # cancel once the big step has written Parquet
                seen_files = list(spilling.area.root.rglob("*.parquet"))
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert not timeout.cancelled_caught and seen_files
    assert not any(p.exists() for p in seen_files)
    spilling.assert_clean()


async def test_the_spill_bound_stops_the_request_and_names_the_setting(
    tmp_path: Path, connectors: dict[str, Connector], store: ResultStore
) -> None:
    spilling = Spilling(tmp_path / "spill", spill_after=1, disk=1 * MiB)
    try:
        query = {"steps": [step("big", "pg", "customers", BIG)], "merge": "SELECT * FROM big"}
        with pytest.raises(SpillLimitExceeded) as info:
            await spilling.run(query, connectors, store)
        err = info.value
        assert err.status == 507 and err.code == "spill_limit_exceeded"
        assert "limits.merge_temp_limit" in err.message and "'big'" in err.message
        assert err.details == {"setting": "limits.merge_temp_limit", "limit_bytes": MiB}
        spilling.assert_clean()
    finally:
        spilling.sink.close()


SMALL_SPILLED = {
    "steps": [step("c", "pg", "customers", "SELECT id, region FROM eng.customers")],
    "merge": "SELECT region, count(*) AS n FROM c GROUP BY region",
}


async def test_a_merge_takes_what_is_left_of_the_pool(
    tmp_path: Path, connectors: dict[str, Connector], store: ResultStore
) -> None:
    spilling = Spilling(tmp_path / "spill", spill_after=1, pool=3 * MIN_GRANT)
    spilling.pool.cap = 2 * MIN_GRANT
    try:
        held = await spilling.pool.acquire()  # another merge holding two thirds
        assert held.nbytes == 2 * MIN_GRANT
        got = await spilling.run(SMALL_SPILLED, connectors, store)
        assert got.memory is not None and got.memory.merge_memory_limit_bytes == MIN_GRANT
        assert spilling.pool.in_use == held.nbytes  # its grant was given back
        await spilling.pool.release(held)
        again = await spilling.run(SMALL_SPILLED, connectors, store)
        assert again.memory is not None
        assert again.memory.merge_memory_limit_bytes == 2 * MIN_GRANT  # its cap
        assert same_rows(got.rows, again.rows)
        spilling.assert_clean()
    finally:
        spilling.sink.close()


async def test_a_merge_waits_while_the_pool_is_used_up(
    tmp_path: Path, connectors: dict[str, Connector], store: ResultStore
) -> None:
    spilling = Spilling(tmp_path / "spill", spill_after=1, pool=MIN_GRANT + MIN_GRANT // 2)
    spilling.pool.cap = MIN_GRANT
    try:
        held = await spilling.pool.acquire()
        results: list[FederatedResult] = []

        async def one() -> None:
            results.append(await spilling.run(SMALL_SPILLED, connectors, store))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            with anyio.fail_after(30):
                while spilling.pool.waiting == 0:  # noqa: ASYNC110 (its merge waits)
                    await anyio.sleep(0.02)
            await anyio.sleep(0.2)
            assert results == [] and spilling.pool.in_use == MIN_GRANT  # never past total
            await spilling.pool.release(held)
        assert results[0].memory is not None
        assert results[0].memory.merge_memory_limit_bytes == MIN_GRANT
        spilling.assert_clean()
    finally:
        spilling.sink.close()


async def test_two_concurrent_merges_share_the_pool(
    tmp_path: Path, connectors: dict[str, Connector], store: ResultStore
) -> None:
    spilling = Spilling(tmp_path / "spill", spill_after=1, pool=3 * MIN_GRANT)
    spilling.pool.cap = 2 * MIN_GRANT
    peak_in_use = 0
    try:
        results: list[FederatedResult] = []

        async def one() -> None:
            results.append(await spilling.run(SMALL_SPILLED, connectors, store))

        async def watch() -> None:
            nonlocal peak_in_use
            while True:
                peak_in_use = max(peak_in_use, spilling.pool.in_use)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
            outer.cancel_scope.cancel()
        assert len(results) == 2 and same_rows(results[0].rows, results[1].rows)
        assert 0 < peak_in_use <= spilling.pool.total
        for r in results:
            assert r.memory is not None and r.memory.merge_memory_limit_bytes is not None
            assert MIN_GRANT <= r.memory.merge_memory_limit_bytes <= 2 * MIN_GRANT
        spilling.assert_clean()
    finally:
        spilling.sink.close()


async def feed(tables: Any, messages: list[tuple[str, Batch | None]]) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[str, Batch | None]](2)
    async with anyio.create_task_group() as tg:
        await tg.start(tables.serve, receive)
        async with send:
            for m in messages:
                await send.send(m)


DOCS: list[tuple[str, Batch | None]] = [  # a document store's batches: fields come and go
    ("d", Batch([Column("id", "BIGINT"), Column("a", "VARCHAR")], rows=[(1, "x"), (2, "y")])),
    ("d", Batch([Column("id", "BIGINT"), Column("b", "DOUBLE")], rows=[(3, 1.5)])),
    ("d", Batch([Column("id", "BIGINT"), Column("c", "DATE")], rows=[])),  # c: no value ever
    ("d", Batch([Column("ID", "BIGINT"), Column("a", "VARCHAR")], rows=[(4, "z")])),
    ("d", None),
]


async def test_a_spilled_step_whose_columns_vary_reads_as_in_memory(
    spilling: Spilling, sink: Sink
) -> None:
    async def rows(s: Sink) -> list[tuple[Any, ...]]:
        tables = await s.open_request("req_docs")
        try:
            await feed(tables, DOCS)
            await tables.prepare_merge()
            sql = f"SELECT * FROM {tables.table_name('d')} ORDER BY id"
            return tables.merge_cursor.sql(sql).fetchall()
        finally:
            await tables.drop()

    want = await rows(sink)
    got = await rows(spilling.sink)
    assert [r[0] for r in want] == [1, 2, 3, 4]
    assert got == want
    spilling.assert_clean()


async def test_a_spilled_merge_reads_only_its_own_folder(
    spilling: Spilling, tmp_path: Path
) -> None:
    """The merge's DuckDB is locked down as the shared one is: no other file, no setting."""
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n1\n")
    tables = await spilling.sink.open_request("req_lock")
    try:
        await feed(tables, DOCS)
        await tables.prepare_merge()
        cur = tables.merge_cursor
        with pytest.raises(duckdb.Error, match="disabled|not allowed|Permission"):
            cur.execute(f"SELECT * FROM read_csv('{outside}')").fetchall()
        with pytest.raises(duckdb.Error, match="disabled|not allowed|Permission"):
            cur.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error, match="locked"):
            cur.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error, match="locked"):
            cur.execute("SET memory_limit = '100GB'")
    finally:
        await tables.drop()
    spilling.assert_clean()


async def test_small_steps_beside_a_spilled_one_are_copied_into_its_merge(
    tmp_path: Path, sink: Sink
) -> None:
    """Beside a spilled step, the small ones are copied into the merge's own DuckDB (as
    tables, read there as in the shared one): the same answer as in memory."""
    cols = [Column("k", "BIGINT"), Column("v", "VARCHAR")]
    messages: list[tuple[str, Batch | None]] = [
        ("big", Batch(cols, rows=[(i % 40, f"big {i}") for i in range(400)]))
    ]
    small = [f"s{n}" for n in range(6)]
    for sid in small:
        messages.append((sid, Batch(cols, rows=[(i, f"{sid} {i}") for i in range(40)])))
    messages += [(sid, None) for sid in ["big", *small]]
    joins = " ".join(f"JOIN {{{sid}}} {sid} USING (k)" for sid in small)

    async def answer(s: Sink) -> list[tuple[Any, ...]]:
        tables = await s.open_request("req_mix")
        try:
            await feed(tables, messages)
            await tables.prepare_merge()
            names = {sid: tables.table_name(sid) for sid in ["big", *small]}
            sql = (
                f"SELECT k, count(*) AS n, max(big.v) AS v FROM {names['big']} big "
                + joins.format(**names)
                + " GROUP BY k ORDER BY k"
            )
            if tables.spill is not None:
                assert tables.spilled == ["big"]
                kinds = tables.merge_cursor.sql(
                    "SELECT table_name, table_type FROM information_schema.tables "
                    f"WHERE table_schema = '{tables.schema}'"
                ).fetchall()
                assert dict(kinds) == {"big": "VIEW"} | dict.fromkeys(small, "BASE TABLE")
            return tables.merge_cursor.sql(sql).fetchall()
        finally:
            await tables.drop()

    spilling = Spilling(tmp_path / "spill", spill_after=2_000)
    try:
        got = await answer(spilling.sink)
        assert spilling.area.leftovers() == []
        want = await answer(sink)
        assert len(want) == 40 and got == want
        spilling.assert_clean()
    finally:
        spilling.sink.close()
