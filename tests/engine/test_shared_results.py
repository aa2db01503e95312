"""Federated results written into the shared S3 store (SeaweedFS, index in PostgreSQL) by the
engine's own write paths, the DuckDB merge and the Spark hand-off, and paged by another
store over the same bucket and index (another process's view: nothing shared in memory)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.config import ResultsConfig
from engine.object_results import ObjectResultStore, filesystem
from engine.results import ANONYMOUS, ResultStore
from engine.results_index import ResultIndex
from engine.spark import SparkMerger
from engine.spark_settings import SparkSettings
from tests.engine.conftest import Run
from tests.engine.test_spark_handoff import JOIN
from tests.s3_server import S3Server
from tests.servers import PgServer


@pytest.fixture
def place(s3: S3Server, pg_server: PgServer, request: pytest.FixtureRequest) -> ResultsConfig:
    schema = f"engine_{secrets.token_hex(4)}"
    request.addfinalizer(lambda: pg_server.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return ResultsConfig(
        store="s3",
        endpoint=s3.endpoint,
        bucket=s3.bucket,
        prefix=f"e{secrets.token_hex(4)}/",
        index=f"{pg_server.dsn}?schema={schema}",
    )


def open_store(cfg: ResultsConfig, s3: S3Server) -> ObjectResultStore:
    fs = filesystem(cfg, env=s3.env())
    return ObjectResultStore(
        fs, s3.bucket, cfg.prefix, ResultIndex(cfg.index or "", pool_size=2), row_group_rows=7
    )


@pytest.fixture
async def store(place: ResultsConfig, s3: S3Server) -> AsyncIterator[ResultStore]:
    """The store `run` writes into (overrides tests/engine/conftest.py's disk store)."""
    s = open_store(place, s3)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def elsewhere(place: ResultsConfig, s3: S3Server) -> AsyncIterator[ObjectResultStore]:
    s = open_store(place, s3)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
def merger(spark: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkMerger]:
    staging: Path = tmp_path_factory.mktemp("shared_staging")
    m = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri(), min_rows=1_000_000))
    yield m
    m.close()


async def test_a_duckdb_merge_lands_in_the_shared_store(
    run: Run, elsewhere: ObjectResultStore
) -> None:
    result = await run(JOIN)
    assert result.row_count > 1
    pages = [
        await elsewhere.page(result.request_id, n, 1, ANONYMOUS)
        for n in range(1, result.row_count + 1)
    ]
    assert [p.rows[0] for p in pages] == result.rows
    assert pages[0].total == result.row_count


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_spark_merge_lands_in_the_shared_store(
    run: Run, merger: SparkMerger, elsewhere: ObjectResultStore
) -> None:
    query = {
        "steps": [
            {
                "step_id": "i",
                "database": "lite",
                "table": "items",
                "query": "SELECT id, order_id, sku, qty FROM items",
            }
        ],
        "merge": "SELECT i.id, i.sku, i.qty * 2 AS q FROM i ORDER BY i.id",
        "engine": "spark",
    }
    local = await run({**query, "engine": "duckdb"})
    remote = await run(query, spark=merger)
    assert remote.merge_engine == "spark" and remote.row_count == local.row_count > 20
    last = await elsewhere.page(remote.request_id, remote.row_count, 1, ANONYMOUS)
    same = await elsewhere.page(local.request_id, local.row_count, 1, ANONYMOUS)
    assert last.rows == same.rows and last.total == remote.row_count
    middle = await elsewhere.page(remote.request_id, 3, 7, ANONYMOUS)  # a row group of 7
    assert [r["id"] for r in middle.rows] == [
        r["id"] for r in (await elsewhere.page(local.request_id, 3, 7, ANONYMOUS)).rows
    ]
