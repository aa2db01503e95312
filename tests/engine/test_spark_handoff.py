"""Federated requests whose merge is handed to a real Spark Connect server: steps on real
databases (PostgreSQL, MariaDB, SQLite, DuckDB files), the merge on Spark, the result in the
result store paged like any other, and the same answer as the DuckDB merge."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from connectors.base import Connector
from engine.config import load_config_text
from engine.errors import (
    ConfigError,
    InvalidQuery,
    InvalidRequest,
    MergeBlocked,
    MergeFailed,
    MergeNotPortable,
    ResultTooLarge,
    SparkUnavailable,
)
from engine.federated import run_federated
from engine.ir import FederatedQuery
from engine.results import DiskResultStore, ResultStore
from engine.sink import Sink
from engine.spark import SparkMerger
from engine.spark_settings import SparkSettings
from safety.config import SafetyConfig
from tests.engine.conftest import Run
from tests.engine.support import checked, checked_plan

# the first test pays for starting the Spark Connect server (tests/spark_server.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def step(sid: str, db: str, table: str, query: str, **kw: Any) -> dict[str, Any]:
    return {"step_id": sid, "database": db, "table": table, "query": query, **kw}


JOIN = {
    "steps": [
        step(
            "c", "pg", "customers", "SELECT id, name, region, balance, created FROM eng.customers"
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
        step("r", "duck", "regions", "SELECT region, rate FROM regions"),
    ],
    "merge": "SELECT c.region, count(*) AS orders, sum(o.amount) AS total, "
    "round(sum(o.amount * r.rate), 2) AS weighted, max(o.placed) AS last_order "
    "FROM c JOIN o ON o.customer_id = c.id JOIN r ON r.region = c.region "
    "GROUP BY c.region ORDER BY c.region",
}


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark_staging")


@pytest.fixture(scope="module")
def merger(spark: str, staging: Path) -> Iterator[SparkMerger]:
    m = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri(), min_rows=1_000_000))
    yield m
    m.close()


def _dead_remote() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"sc://127.0.0.1:{s.getsockname()[1]}"


async def test_a_merge_asked_for_spark_gives_the_duckdb_answer_and_pages(
    run: Run, merger: SparkMerger, store: ResultStore, staging: Path
) -> None:
    local = await run(JOIN)
    remote = await run({**JOIN, "engine": "spark"}, spark=merger)
    assert local.merge_engine is None and remote.merge_engine == "spark"
    assert (
        remote.columns == local.columns == ["region", "orders", "total", "weighted", "last_order"]
    )
    assert remote.row_count == local.row_count > 1
    assert remote.rows == local.rows  # same values, same Python types, same order
    page = store.page_sync(remote.request_id, 2, 1)
    assert page.rows == [local.rows[1]] and page.total == local.row_count
    assert os.listdir(staging) == []  # the request's staging folder is gone


async def test_a_large_result_streams_into_the_store_in_row_groups(
    run: Run, merger: SparkMerger, store: ResultStore
) -> None:
    query = {
        "steps": [step("i", "lite", "items", "SELECT id, order_id, sku, qty FROM items")],
        "merge": "SELECT i.id, i.sku, i.qty * g.n AS q FROM i CROSS JOIN "
        "(SELECT unnest([1, 2, 3, 4, 5, 6, 7, 8]) AS n) g ORDER BY i.id, q",
        "engine": "spark",
    }
    local = await run({**query, "engine": "duckdb"})
    remote = await run(query, spark=merger)
    assert remote.row_count == local.row_count
    assert remote.rows == local.rows  # the inline head, in the merge's order
    last = store.page_sync(remote.request_id, remote.row_count, 1).rows
    assert last == store.page_sync(local.request_id, local.row_count, 1).rows


async def test_a_silently_different_merge_is_refused_before_any_step_runs(
    run: Run, merger: SparkMerger
) -> None:
    progress: list[Any] = []
    query = {
        "steps": JOIN["steps"][:1],
        "merge": "SELECT dayname(c.created) AS day, count(*) AS n FROM c GROUP BY 1",
        "engine": "spark",
    }
    with pytest.raises(MergeNotPortable) as caught:
        await run(query, spark=merger, on_progress=progress.append)
    assert progress == []  # nothing ran
    err = caught.value
    assert err.status == 400 and err.code == "merge_not_portable"
    assert "DAYNAME" in err.message and "'Mon'" in err.message
    assert err.suggestion is not None and "strftime(d, '%A')" in err.suggestion
    assert err.details is not None and err.details["silent_difference"] is True


async def test_a_cast_of_a_decimal_column_is_refused_once_its_type_is_known(
    run: Run, merger: SparkMerger, store: ResultStore
) -> None:
    query = {
        "steps": JOIN["steps"][:1],
        "merge": "SELECT CAST(c.balance AS INTEGER) AS b FROM c",
        "engine": "spark",
    }
    with pytest.raises(MergeNotPortable, match=r"DECIMAL\(12, 2\)"):
        await run(query, spark=merger)
    assert len(store) == 0


async def test_spark_s_own_analysis_refuses_before_anything_is_staged(
    run: Run, merger: SparkMerger, store: ResultStore, staging: Path
) -> None:
    # valid DuckDB, transpiled as is, and a function Spark does not have
    query = {
        "steps": JOIN["steps"][:1],
        "merge": "SELECT jaro_winkler_similarity(c.name, 'x') AS s FROM c",
        "engine": "spark",
    }
    with pytest.raises(MergeNotPortable) as caught:
        await run(query, spark=merger)
    assert "analysis refused" in caught.value.message
    assert "UNRESOLVED_ROUTINE" in caught.value.message and "JAROWINKLER" in caught.value.message
    assert os.listdir(staging) == [] and len(store) == 0


async def test_past_min_rows_a_merge_goes_to_spark_and_below_stays_local(
    run: Run, spark: str, staging: Path
) -> None:
    low = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri(), min_rows=10))
    high = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri(), min_rows=10**9))
    try:
        sent = await run(JOIN, spark=low)
        kept = await run(JOIN, spark=high)
        pinned = await run({**JOIN, "engine": "duckdb"}, spark=low)
    finally:
        low.close()
        high.close()
    assert sent.merge_engine == "spark" and kept.merge_engine is None
    assert pinned.merge_engine is None
    assert sent.rows == kept.rows == pinned.rows


async def test_an_automatic_hand_off_falls_back_to_duckdb_with_a_warning(
    run: Run, spark: str, staging: Path
) -> None:
    merger = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri(), min_rows=1))
    query = {
        "steps": JOIN["steps"][:1],
        "merge": "SELECT c.region, list(c.id ORDER BY c.id) AS ids FROM c GROUP BY 1 ORDER BY 1",
    }
    try:
        result = await run(query, spark=merger)
    finally:
        merger.close()
    assert result.merge_engine is None and result.row_count > 0
    assert any("ran in DuckDB instead of Spark" in w and "ORDER BY" in w for w in result.warnings)
    assert result.rows[0]["ids"] == sorted(result.rows[0]["ids"])


async def test_an_unreachable_server_is_a_503_when_asked_and_a_fallback_otherwise(
    run: Run, staging: Path
) -> None:
    dead = _dead_remote()
    asked = SparkMerger(SparkSettings(remote=dead, staging=staging.as_uri(), min_rows=1))
    started = time.monotonic()
    with pytest.raises(SparkUnavailable) as caught:
        await run({**JOIN, "engine": "spark"}, spark=asked)
    assert caught.value.status == 503 and dead in caught.value.message
    assert time.monotonic() - started < 30  # refused at the socket, not after retries
    result = await run(JOIN, spark=asked)
    assert result.merge_engine is None and result.row_count > 0
    assert any("cannot be reached" in w for w in result.warnings)


async def test_asking_for_spark_without_it_configured_is_a_400(run: Run) -> None:
    with pytest.raises(InvalidRequest, match=r"engine\.spark") as caught:
        await run({**JOIN, "engine": "spark"})
    assert caught.value.status == 400


def test_the_settings_are_checked_at_start() -> None:
    good = load_config_text(
        "engine:\n  spark:\n    remote: sc://127.0.0.1:15002\n"
        "    staging: file:///var/tmp/sluice-staging\n    min_rows: 5000000\n"
    )
    assert good.engine.spark is not None and good.engine.spark.min_rows == 5_000_000
    with pytest.raises(ConfigError) as s3:
        load_config_text(
            "engine:\n  spark:\n    remote: sc://h:15002\n    staging: s3://bucket/prefix\n"
        )
    assert "line 4: engine.spark.staging" in str(s3.value) and "hadoop-aws" in str(s3.value)
    with pytest.raises(ConfigError, match="sc://"):
        load_config_text("engine:\n  spark:\n    remote: http://h:1\n    staging: file:///x\n")
    with pytest.raises(ConfigError, match="file:///absolute"):
        load_config_text("engine:\n  spark:\n    remote: sc://h:1\n    staging: relative/dir\n")
    with pytest.raises(ConfigError, match="unknown key 'min_row'"):
        load_config_text(
            "engine:\n  spark:\n    remote: sc://h:1\n    staging: file:///x\n    min_row: 5\n"
        )


async def test_spilled_steps_are_handed_to_spark_and_everything_is_given_back(
    run: Run,
    connectors: dict[str, Connector],
    merger: SparkMerger,
    store: ResultStore,
    tmp_path: Path,
    staging: Path,
) -> None:
    # the step's rows pass spill_after: they are in Parquet files, read through the
    # request's own merge DuckDB, staged from there for Spark
    from tests.engine.test_spill import BIG, Spilling

    query = {
        "steps": [step("b", "pg", "customers", BIG)],
        "merge": "SELECT b.customer_id, count(*) AS n, sum(b.amount) AS total, "
        "max(b.note) AS last_note FROM b GROUP BY b.customer_id ORDER BY b.customer_id",
    }
    spilling = Spilling(tmp_path / "spill", spill_after=256 * 1024)
    local = await spilling.run(query, connectors, store)
    remote = await spilling.run({**query, "engine": "spark"}, connectors, store, spark=merger)
    assert local.memory is not None and local.memory.spilled_steps == ["b"]
    assert remote.memory is not None and remote.memory.spilled_steps == ["b"]
    assert remote.merge_engine == "spark" and local.merge_engine is None
    assert remote.rows == local.rows and remote.row_count == local.row_count == 300
    spilling.assert_clean()
    assert os.listdir(staging) == []


async def test_a_result_past_the_store_bound_stops_the_job_and_keeps_nothing(
    connectors: dict[str, Connector], sink: Sink, merger: SparkMerger, tmp_path: Path, staging: Path
) -> None:
    small = DiskResultStore(tmp_path / "small", max_bytes=64 * 1024)
    query = msgspec.convert(
        {
            "steps": [step("i", "lite", "items", "SELECT id, order_id, sku, qty FROM items")],
            "merge": "SELECT i.*, g.n FROM i CROSS JOIN (SELECT unnest(range(200)) AS n) g",
            "engine": "spark",
        },
        FederatedQuery,
    )
    with pytest.raises(ResultTooLarge):
        await run_federated(
            checked_plan(query, checked(query), connectors),
            connectors,
            sink=sink,
            store=small,
            safety=SafetyConfig(),
            request_id="req_sparktoolarge",
            spark=merger,
        )
    assert len(small) == 0 and os.listdir(tmp_path / "small") == []
    assert os.listdir(staging) == [] and sink.schemas() == []


@pytest.mark.parametrize(
    "merge",
    [
        # Spark functions that call into the JVM or read the host: not DuckDB functions, so
        # the merge never binds and never reaches Spark
        "SELECT reflect('java.lang.System', 'getProperty', 'user.home') AS h FROM c",
        "SELECT java_method('java.lang.Runtime', 'getRuntime') AS r FROM c",
        "SELECT input_file_name() AS f FROM c",
    ],
)
async def test_spark_only_functions_never_reach_spark(
    run: Run, merger: SparkMerger, store: ResultStore, staging: Path, merge: str
) -> None:
    query = {"steps": JOIN["steps"][:1], "merge": merge, "engine": "spark"}
    with pytest.raises(MergeFailed, match="does not exist"):
        await run(query, spark=merger)
    assert os.listdir(staging) == [] and len(store) == 0


async def test_a_merge_reading_files_is_blocked_before_spark(run: Run, merger: SparkMerger) -> None:
    for merge, error in (
        ("SELECT * FROM parquet.`/etc/passwd`", InvalidQuery),  # Spark's syntax: not DuckDB's
        ('SELECT * FROM "/etc/passwd.parquet"', MergeBlocked),
        ("SELECT * FROM read_parquet('/etc/passwd')", MergeBlocked),
        ("SELECT * FROM c JOIN default.secrets s ON s.id = c.id", MergeBlocked),
    ):
        with pytest.raises(error):
            await run({"steps": JOIN["steps"][:1], "merge": merge, "engine": "spark"}, spark=merger)


async def test_a_cancelled_request_stops_its_spark_job_and_cleans_up(
    run: Run, merger: SparkMerger, staging: Path
) -> None:
    heavy = {
        "steps": [step("i", "lite", "items", "SELECT id, order_id, sku, qty FROM items")],
        # long enough to be running when cancelled, short enough (seconds) that tasks Spark
        # lets finish after a cancel never hold the test server's two slots for long
        "merge": "SELECT count(*) AS n, sum(i.qty * g.n) AS s FROM i CROSS JOIN "
        "(SELECT unnest(range(400000)) AS n) g",
        "engine": "spark",
    }
    started = time.monotonic()
    with anyio.move_on_after(1) as scope:  # a quiet machine finished the merge within 3 s
        await run(heavy, spark=merger, check_schemas=False)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 40  # interrupted, not waited out
    assert os.listdir(staging) == []
    # nothing of it is left running on the server: interrupting everything finds nothing
    assert await anyio.to_thread.run_sync(merger.session().interruptAll) == []
    # the shared session still serves the next request
    after = await run({**JOIN, "engine": "spark"}, spark=merger)
    assert after.merge_engine == "spark" and after.row_count > 1
