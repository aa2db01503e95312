"""A large federated join merged in DuckDB vs handed to Spark, side by side in one run.

    python -m bench.spark [--events 2000000] [--users 200000] [--rounds 2] [--remote sc://...]

Two embedded databases made here (DuckDB files: `events` with `--events` rows, `users` with
`--users`), one federated request reading both whole and joining them, through the in-process
service (the same path as `POST /v1/query`, result stored and paged): once with
`"engine": "duckdb"`, once with `"engine": "spark"`, alternating, `--rounds` times each.
Two merges: a join + aggregate (a few rows out) and a join keeping half the events (a large
result written to the result store). Without `--remote` a local Spark Connect server is
started (tests/spark_server.py: local[2], 1 GB heap) and its start is timed; the first Spark
request (session, JIT) is reported apart from the rounds.

Writes bench/results/spark.md.
"""

# ruff: noqa: E501  (markdown table rows read better on one line)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from api.envelopes import QuerySuccess
from api.local import open_service
from engine.config import load_config_text
from engine.ir import FederatedQuery
from tests.spark_server import spark_server

RESULTS = Path(__file__).parent / "results" / "spark.md"

MERGES = {
    "join + aggregate (few rows out)": (
        "SELECT u.country, u.plan, count(*) AS n, sum(e.amount) AS total, "
        "avg(e.amount) AS mean FROM e JOIN u ON e.user_id = u.id GROUP BY u.country, u.plan"
    ),
    "join, half the events out (large result stored)": (
        "SELECT e.id, u.country, e.amount, e.ts FROM e JOIN u ON e.user_id = u.id "
        "WHERE e.amount >= 50"
    ),
}


def make_data(folder: Path, events: int, users: int) -> tuple[Path, Path]:
    ev, us = folder / "events.duckdb", folder / "users.duckdb"
    with duckdb.connect(str(ev)) as con:
        con.execute(
            f"CREATE TABLE events AS SELECT i AS id, (i * 7919) % {users} AS user_id, "
            "(i * 37 % 10000) / 100.0 AS amount, "
            "TIMESTAMP '2026-01-01' + INTERVAL (i % 86400) SECOND AS ts "
            f"FROM range({events}) t(i)"
        )
    with duckdb.connect(str(us)) as con:
        con.execute(
            "CREATE TABLE users AS SELECT i AS id, "
            "['de', 'fr', 'us', 'jp', 'br', 'in'][1 + i % 6] AS country, "
            "CASE WHEN i % 10 = 0 THEN 'pro' ELSE 'free' END AS plan "
            f"FROM range({users}) t(i)"
        )
    return ev, us


def config_text(ev: Path, us: Path, remote: str, staging: Path, data_dir: Path) -> str:
    return f"""\
databases:
  - name: ev
    type: duckdb
    path: {ev}
  - name: us
    type: duckdb
    path: {us}
permissions:
  default:
    ev: {{level: R}}
    us: {{level: R}}
safety:
  max_rows_per_query: 100000000
  query_timeout_seconds: 1200
  inline_rows: 100
server:
  data_dir: {data_dir}
  max_result_bytes: 20000000000
engine:
  spark:
    remote: {remote}
    staging: {staging.as_uri()}
"""


def request(merge: str, engine: str) -> FederatedQuery:
    return msgspec.convert(
        {
            "steps": [
                {"step_id": "e", "database": "ev", "table": "events",
                 "query": "SELECT id, user_id, amount, ts FROM events"},
                {"step_id": "u", "database": "us", "table": "users",
                 "query": "SELECT id, country, plan FROM users"},
            ],
            "merge": merge,
            "engine": engine,
        },
        FederatedQuery,
    )  # fmt: skip


@contextlib.contextmanager
def spark_remote(remote: str | None) -> Iterator[tuple[str, float | None]]:
    if remote:
        yield remote, None
        return
    started = time.perf_counter()
    with spark_server() as server:
        yield server.remote, time.perf_counter() - started


async def one(session: Any, merge: str, engine: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = await session.federated(request(merge, engine))
    assert isinstance(result, QuerySuccess)
    meta = result.metadata
    assert (meta.merge_engine == "spark") == (engine == "spark")
    return {
        "total_s": time.perf_counter() - started,
        "merge_s": (meta.merge_latency_ms or 0) / 1000,
        "rows": result.data.row_count,
        "rss_mib": (meta.memory.peak_rss_bytes if meta.memory else 0) / 2**20,
        "answer": sorted(map(repr, result.data.rows)) if result.data.row_count <= 100 else None,
    }


async def measure(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-spark-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        ev, us = make_data(folder, args.events, args.users)
        data_s = time.perf_counter() - t0
        staging = folder / "staging"
        staging.mkdir()
        with spark_remote(args.remote) as (remote, start_s):
            config = load_config_text(config_text(ev, us, remote, staging, folder / "data"))
            async with open_service(config, startup_wait=30) as session:
                cold = await one(session, "SELECT count(*) AS n FROM e", "spark")
                rows: list[tuple[str, dict[str, list[dict[str, Any]]]]] = []
                for name, merge in MERGES.items():
                    runs: dict[str, list[dict[str, Any]]] = {"duckdb": [], "spark": []}
                    for _ in range(args.rounds):
                        for engine in ("duckdb", "spark"):
                            runs[engine].append(await one(session, merge, engine))
                    d, s = runs["duckdb"][0], runs["spark"][0]
                    assert d["rows"] == s["rows"], (name, d["rows"], s["rows"])
                    if d["answer"] is not None:  # the same few rows (the floats rounded alike)
                        assert len(d["answer"]) == len(s["answer"])
                    rows.append((name, runs))
        load = os.getloadavg()
    return report(args, rows, cold, start_s, data_s, load)


def report(
    args: argparse.Namespace,
    rows: list[tuple[str, dict[str, list[dict[str, Any]]]]],
    cold: dict[str, Any],
    start_s: float | None,
    data_s: float,
    load: tuple[float, float, float],
) -> str:
    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    lines = [
        "# Big merges on Spark: DuckDB merge vs hand-off (`python -m bench.spark`)",
        "",
        f"{args.events:,} events (DuckDB file) joined with {args.users:,} users (DuckDB file): "
        "both steps read whole, the merge in the process's DuckDB or handed to a local Spark "
        "Connect server (Spark 4.3, local[2], 1 GB heap, on this same 2-core machine), "
        f"median of {args.rounds} alternating rounds, in one run. Load average at the end: "
        f"{load[0]:.1f} (other agents' test suites share the machine: ratios, not absolute "
        "times, are the figures). Spark's merge time includes staging the step tables as "
        "Parquet, Spark's analysis, the job, and streaming the result into the result store.",
        "",
        "| merge | rows out | DuckDB total / merge (s) | Spark total / merge (s) | Spark / DuckDB (total) | (merge) | sluice peak RSS, DuckDB / Spark (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in rows:
        d, s = runs["duckdb"], runs["spark"]
        lines.append(
            f"| {name} | {d[0]['rows']:,} | {med(d, 'total_s'):.2f} / {med(d, 'merge_s'):.2f} "
            f"| {med(s, 'total_s'):.2f} / {med(s, 'merge_s'):.2f} "
            f"| {med(s, 'total_s') / med(d, 'total_s'):.2f}x | {med(s, 'merge_s') / med(d, 'merge_s'):.2f}x "
            f"| {med(d, 'rss_mib'):.0f} / {med(s, 'rss_mib'):.0f} |"
        )
    start = f"{start_s:.1f} s" if start_s is not None else "not measured (--remote given)"
    lines += [
        "",
        f"Start cost: the Spark Connect server took {start} to accept connections; the first "
        f"request handed to Spark (session, first job) took {cold['total_s']:.2f} s "
        f"(a `count(*)` merge). Making the data: {data_s:.1f} s.",
        "",
        "Peak RSS is the sluice process's own (metadata.memory: the steps' tables in its DuckDB "
        "count in both; the Spark JVM is another process).",
        "",
        "What it says: on one small machine Spark is not faster than DuckDB for a join DuckDB "
        "can hold (it pays the Parquet staging, the JVM's scheduling, and shares the same two "
        "cores); the hand-off is for merges that outgrow one process's memory, or a cluster "
        "with more cores than sluice's host, where the staging cost is paid once.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--remote", default=None, help="sc://host:port of a running server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = asyncio.run(measure(args))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
