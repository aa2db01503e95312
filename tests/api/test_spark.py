"""The Spark hand-off over HTTP: a real `sluice serve` configured with `engine.spark` and a
real Spark Connect server. A request asking for Spark answers as DuckDB would and pages
through /v1/results; a run whose config asks for Spark completes and downloads; a merge Spark
would answer differently is a 400 envelope naming the construct; the reference's bodies
(without "engine") are untouched."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import Server, config_text, free_port, make_files, start_server, stop_server
from tests.helpers import assert_error_envelope
from tests.servers import MySQLServer, PgServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LINKED = {
    "steps": [
        {"step_id": "i", "database": "pg", "table": "items",
         "query": "SELECT id, name, price FROM items WHERE id <= 20"},
        {"step_id": "o", "database": "maria", "table": "orders",
         "query": "SELECT id, item_id, qty, amount FROM orders",
         "depends_on": ["i"], "link_from": "id", "link_to": "item_id"},
    ],
    "merge": "SELECT o.id AS order_id, i.name, o.qty, o.amount, o.qty * i.price AS value "
    "FROM i JOIN o ON o.item_id = i.id ORDER BY o.id",
}  # fmt: skip


@pytest.fixture(scope="module")
def spark_server_http(
    seeded: tuple[PgServer, MySQLServer], spark: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    pg, my = seeded
    folder = tmp_path_factory.mktemp("spark_server")
    staging = folder / "staging"
    staging.mkdir()
    lite, duck = make_files(folder / "files")
    extra = f"engine:\n  spark:\n    remote: {spark}\n    staging: {staging.as_uri()}\n"
    # a cold Spark server's first job takes 30-40 s on this machine: the request bound of the
    # other API tests (5 s) would turn the hand-off into a 504 whatever it returns
    text = config_text(pg, my, lite, duck, dead_port=free_port(), extra=extra)
    text = text.replace("  query_timeout_seconds: 5\n", "  query_timeout_seconds: 180\n")
    assert "query_timeout_seconds: 180" in text
    srv = start_server(text, folder, timeout=60)
    try:
        yield srv, staging
    finally:
        stop_server(srv)


def test_a_request_asking_for_spark_answers_as_duckdb_and_pages(
    spark_server_http: tuple[Server, Path],
) -> None:
    server, staging = spark_server_http
    with server.client() as c:
        local = c.post("/v1/query", json=LINKED)
        remote = c.post("/v1/query", json={**LINKED, "engine": "spark"}, timeout=120)
        assert local.status_code == 200 and remote.status_code == 200, remote.text
        lj, rj = local.json(), remote.json()
        assert "merge_engine" not in lj["metadata"]  # the reference's body, the reference's answer
        assert rj["metadata"]["merge_engine"] == "spark"
        assert rj["data"]["columns"] == lj["data"]["columns"]
        assert rj["data"]["rows"] == lj["data"]["rows"] and rj["data"]["row_count"] > 10
        page = c.get(f"/v1/results/{rj['request_id']}", params={"page": 2, "size": 5})
        assert page.status_code == 200, page.text
        assert page.json()["rows"] == lj["data"]["rows"][5:10]
    assert list(staging.iterdir()) == []


def test_a_silently_different_merge_is_a_400_naming_it(
    spark_server_http: tuple[Server, Path],
) -> None:
    server, _ = spark_server_http
    body = {**LINKED, "engine": "spark", "merge": "SELECT CAST(i.price AS INTEGER) AS p FROM i"}
    with server.client() as c:
        r = c.post("/v1/query", json=body, timeout=120)
    err = assert_error_envelope(r, 400, "merge_not_portable")["error"]
    assert "price" in err["message"] and "truncates in Spark" in err["message"]
    assert "round(x)" in err["suggestion"]
    assert err["details"]["silent_difference"] is True


def test_an_unknown_engine_is_a_400_naming_the_field(
    spark_server_http: tuple[Server, Path],
) -> None:
    server, _ = spark_server_http
    with server.client() as c:
        r = c.post("/v1/query", json={**LINKED, "engine": "hadoop"})
    err = assert_error_envelope(r, 400)["error"]
    assert "engine" in err["message"]


def _run_result(c: Any, config: dict[str, Any]) -> pa.Table:
    r = c.post("/v1/runs", json={"config": config, "config_format": "json"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    deadline = time.monotonic() + 120
    while (record := c.get(f"/v1/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, record
        time.sleep(0.5)
    assert record["status"] == "completed", record
    got = c.get(f"/v1/runs/{run_id}/result", params={"format": "parquet"}, timeout=60)
    assert got.status_code == 200, got.text
    return pq.read_table(io.BytesIO(got.content))


def test_a_run_asking_for_spark_completes_with_the_duckdb_answer(
    spark_server_http: tuple[Server, Path],
) -> None:
    server, _ = spark_server_http
    with server.client() as c:
        local = _run_result(c, {**LINKED, "engine": "duckdb"})
        remote = _run_result(c, {**LINKED, "engine": "spark"})
    assert remote.num_rows == local.num_rows > 50  # the whole result, past safety.inline_rows
    assert remote.column_names == local.column_names
    assert remote.to_pylist() == local.to_pylist()


def test_a_dry_run_checks_the_merge_for_spark_too(spark_server_http: tuple[Server, Path]) -> None:
    server, _ = spark_server_http
    with server.client() as c:
        ok = c.post("/v1/query", json={**LINKED, "engine": "spark", "dry_run": True})
        refused = c.post(
            "/v1/query",
            json={**LINKED, "engine": "spark", "dry_run": True,
                  "merge": "SELECT dayofweek(CURRENT_DATE) AS d FROM i"},
        )  # fmt: skip
    assert ok.status_code == 200 and ok.json()["status"] == "dry_run", ok.text
    assert (
        "DAYOFWEEK" in assert_error_envelope(refused, 400, "merge_not_portable")["error"]["message"]
    )
