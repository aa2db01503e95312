"""The sluice side of the benchmark harness: a real `sluice serve` over a dataset of its own
answers the workloads with the raw drivers' results, and targets/report read what the
runners record. Timings are never asserted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import bodies, datagen, federated, pipeline, raw, report, results, targets
from bench.datasets import Targets, load
from bench.server import JOIN_MAX_ROWS, RssSampler, config_yaml, serve
from engine.config import load_config_text
from tests.servers import bench_targets

SPEC = datagen.spec_for(20_000)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    """A small dataset in databases of its own, dropped afterwards."""
    with bench_targets(tmp_path_factory.mktemp("data")) as t:
        asyncio.run(load(SPEC, t, only=("pg", "mysql")))
        yield t


def test_the_generated_config_is_valid(tmp_path: Path) -> None:
    config = load_config_text(config_yaml(Targets(), tmp_path, max_rows=JOIN_MAX_ROWS))
    assert config.safety.max_rows_per_query == JOIN_MAX_ROWS
    assert {d.name for d in config.databases} == {bodies.PG_NAME, bodies.MYSQL_NAME}
    for db in config.databases:
        assert config.permissions.default[db.name].level == "R"
        assert db.query_timeout_seconds == config.safety.query_timeout_seconds


@pytest.mark.timeout(180)
def test_a_real_server_answers_the_workloads_like_the_raw_drivers(loaded: Targets) -> None:
    n = 5_000
    expected = asyncio.run(raw.linked_join(n, targets=loaded))
    with serve(loaded, server="hypercorn") as s:
        lookup = federated.post_join  # any POST helper that raises on a non-200
        got = _post(s.base_url, "/v1/query/simple", bodies.lookup_body(7))
        assert got["data"]["rows"][0]["id"] == 7
        with RssSampler(s.pid) as sampler:
            joined = lookup(s.base_url, bodies.join_body(n))
        assert sampler.peak > 0
        assert s.tree_rss_bytes() > 0
        steps = {st["step_id"]: st for st in joined["metadata"]["steps"]}
        assert steps["s0"]["rows_returned"] == n
        assert steps["s1"]["rows_returned"] == expected["orders_rows"]
        assert sum(int(r["events"]) for r in joined["data"]["rows"]) == expected["events_joined"]
        # a linked child's timings are what the pipeline suite reads
        child = pipeline.linked_child(s.base_url, n)
        assert child["child_first_batch_ms"] is not None
        assert child["parent_end_ms"] >= child["parent_started_ms"]
        # the independent-steps body is legal and runs both steps
        both = {
            "steps": [
                pipeline.step("s0", bodies.PG_NAME, 1_000),
                pipeline.step("s1", bodies.MYSQL_NAME, 1_000),
            ],
            "merge": "SELECT * FROM s0 UNION ALL SELECT * FROM s1",
        }
        rows = federated.post_join(s.base_url, both)["data"]["rows"]
        assert sum(int(r["n"]) for r in rows) == 2_000


def _post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    resp = httpx.post(f"{base_url}{path}", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_targets_and_report_read_what_the_runners_record(tmp_path: Path) -> None:
    def rec(runner: str, workload: str, metrics: dict[str, Any], **params: Any) -> None:
        results.record(runner, workload, metrics, params=params, results_dir=tmp_path)

    lookup = {"req_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0}
    for c in (1, 32):
        rec("raw", results.ONE_ROW_LOOKUP, {**lookup, "req_per_s": 1000.0}, concurrency=c)
        rec(
            "sluice",
            results.ONE_ROW_LOOKUP,
            {**lookup, "req_per_s": 700.0, "direct_req_per_s": 1000.0, "vs_direct": 0.7},
            concurrency=c,
            server="granian",
            workers=1,
        )
        rec("peer", results.ONE_ROW_LOOKUP, {**lookup, "req_per_s": 10.0}, concurrency=c)
    for n, secs, rss in ((100_000, 0.2, 200 * 2**20), (1_000_000, 2.0, 300 * 2**20)):
        rec(
            "sluice",
            results.LINKED_JOIN,
            {
                "seconds": secs,
                "raw_seconds": 1.0,
                "vs_raw": secs,
                "rows_per_s": n / secs,
                "rss_peak_bytes": rss,
            },
            n_events=n,
            server="hypercorn",
        )
        rec("raw", results.LINKED_JOIN, {"total_s": 1.0}, n_events=n)
    rec("peer", results.LINKED_JOIN, {"failed": "500"}, n_events=100_000, form="linked")
    rec("peer", results.LINKED_JOIN, {"seconds": 100.0}, n_events=100_000, form="range")

    got = {t.name: t for t in targets.evaluate(results.read(tmp_path / "latest.json"))}
    assert got["simple c=32 vs direct asyncpg"].met is True
    assert got["simple c=32 vs the reference product"].met is True  # 70x
    assert got["linked join 1M rows vs the raw drivers"].met is False  # 2.0x
    assert got["peak server RSS, 100k -> 1M rows"].met is False  # +50%
    peer = got["linked join vs the reference product"]
    assert peer.met is True and "linked form failed" in peer.measured  # 100 s / 0.2 s
    assert got["two independent ~1 s steps"].met is None  # not measured

    md = report.render(tmp_path).read_text()
    assert "| simple c=32 vs direct asyncpg |" in md
    assert "| 32 | 1,000.0 | granian x1 | " not in md  # columns, not a row per side
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "join_time.png").stat().st_size > 0


@pytest.mark.timeout(120)
def test_the_thin_service_and_sluice_answer_a_lookup_alike(loaded: Targets) -> None:
    """bench/dashboard.py's baseline returns the row sluice returns for the same key (the
    ratio compares equal work); the wrk script posts the body sluice expects."""
    import httpx

    from bench import dashboard

    with dashboard.thin("hypercorn", 1, loaded.pg_dsn) as (base, _):
        thin_rows = httpx.post(f"{base}/lookup", json={"id": 42}, timeout=30).json()["rows"]
    body = json.loads(dashboard.sluice_body_fmt() % 42)
    with serve(loaded, server="hypercorn") as s:
        got = _post(s.base_url, "/v1/query/simple", body)
    assert got["data"]["rows"] == thin_rows and thin_rows[0]["id"] == 42
    script = dashboard.lua_script(dashboard.sluice_body_fmt(), 1000, "/v1/query/simple")
    assert "local keys, step, users = 1000, 100, 100000" in script
    assert dashboard.key_of(999, 1000) == 99_901
