"""`pipeline`: concurrency inside one federated request.

    python -m bench.pipeline [--target-s 1.0] [--link-n 1000000]

- Independent steps: an aggregate over PostgreSQL events and one over MariaDB events, each
  sized to take about `target_s` alone (pg_sleep/SLEEP are side-effect functions the safety
  pipeline blocks by design, so the load is real work). Each runs alone, then both in one
  request, `repeat` times interleaved; wall time against the slowest alone, each the best
  of its runs (other processes on a shared machine only ever add time; medians are kept
  too). `vs_slowest` <= 1.1 is the target. Both databases share this machine's two cores,
  so "independent" still competes for CPU: the databases' CPU time for each step alone is
  measured from /proc, and `cpu_floor_s` = max(slowest, both steps' database CPU / cores)
  is the best wall time this machine allows; `vs_cpu_floor` is the wall against it.
- Linked child: the linked join at `link_n` events; from metadata.steps, the child's first
  batch (its first native query had already returned) against the parent's end
  (started_ms + latency_ms). A positive `child_lead_ms` means the child ran while the parent
  was still streaming.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench import bodies, results
from bench.federated import post_join
from bench.server import JOIN_MAX_ROWS, serve
from bench.simple import emit, load_avg

RUNNER = "sluice"
INDEPENDENT_STEPS = "INDEPENDENT_STEPS"
LINKED_CHILD_START = "LINKED_CHILD_START"
AGG = "SELECT kind, COUNT(*) AS n, SUM(amount) AS total FROM events WHERE id <= {x} GROUP BY kind"


def step(step_id: str, database: str, x: int) -> dict[str, Any]:
    return {
        "step_id": step_id,
        "database": database,
        "table": "events",
        "language": "sql",
        "query": AGG.format(x=int(x)),
    }


DB_PROCESSES = frozenset({"postgres", "mariadbd", "mysqld"})
_TICK = os.sysconf("SC_CLK_TCK")


def db_cpu_seconds() -> float:
    """CPU time used so far by the database servers on this machine (their processes, plus
    the exited children they reaped: PostgreSQL's parallel workers)."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() not in DB_PROCESSES:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def timed(base_url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    got = post_join(base_url, body)
    return time.perf_counter() - t0, got


def timed_cpu(base_url: str, body: dict[str, Any]) -> tuple[float, float]:
    """Wall seconds and the databases' CPU seconds for one request."""
    cpu0 = db_cpu_seconds()
    took, _ = timed(base_url, body)
    return took, db_cpu_seconds() - cpu0


def calibrate(
    base_url: str, database: str, x: int, target_s: float, max_rows: int
) -> tuple[int, float]:
    """Rows to aggregate so the step alone takes about target_s (one linear correction;
    a small dataset caps it at every row, and the steps are then shorter)."""
    x = min(x, max_rows)
    timed(base_url, {"steps": [step("s0", database, x)]})  # warm caches
    took, _ = timed(base_url, {"steps": [step("s0", database, x)]})
    x = min(max_rows, max(10_000, int(x * target_s / took)))
    took, _ = timed(base_url, {"steps": [step("s0", database, x)]})
    return x, took


def independent(
    base_url: str, target_s: float, repeat: int, max_rows: int = 10**12
) -> dict[str, Any]:
    pg_x, _ = calibrate(base_url, bodies.PG_NAME, 2_000_000, target_s, max_rows)
    my_x, _ = calibrate(base_url, bodies.MYSQL_NAME, 1_000_000, target_s, max_rows)
    alone_pg, alone_my, together, server_ms = [], [], [], []
    cpu_pg, cpu_my = [], []
    both = {
        "steps": [step("s0", bodies.PG_NAME, pg_x), step("s1", bodies.MYSQL_NAME, my_x)],
        "merge": "SELECT * FROM s0 UNION ALL SELECT * FROM s1",
    }
    steps_meta: list[Any] = []
    for _ in range(repeat):
        took, cpu = timed_cpu(base_url, {"steps": [step("s0", bodies.PG_NAME, pg_x)]})
        alone_pg.append(took)
        cpu_pg.append(cpu)
        took, cpu = timed_cpu(base_url, {"steps": [step("s1", bodies.MYSQL_NAME, my_x)]})
        alone_my.append(took)
        cpu_my.append(cpu)
        took, got = timed(base_url, both)
        together.append(took)
        server_ms.append(got["metadata"]["execution_time_ms"])
        steps_meta = got["metadata"]["steps"]
    pg_s, my_s, wall = min(alone_pg), min(alone_my), min(together)
    # Two cores: the databases alone need this much CPU for both steps, whatever overlaps.
    cpu_s = min(cpu_pg) + min(cpu_my)
    floor = max(pg_s, my_s, cpu_s / (os.cpu_count() or 1))
    return {
        "pg_rows": pg_x,
        "mysql_rows": my_x,
        "pg_alone_s": pg_s,
        "mysql_alone_s": my_s,
        "slowest_alone_s": max(pg_s, my_s),
        "sum_alone_s": pg_s + my_s,
        "seconds": wall,
        "all_seconds": together,
        "median_seconds": statistics.median(together),
        "median_vs_slowest": round(
            statistics.median(together)
            / max(statistics.median(alone_pg), statistics.median(alone_my)),
            3,
        ),
        "server_ms": statistics.median(server_ms),
        "vs_slowest": round(wall / max(pg_s, my_s), 3),
        "db_cpu_pg_s": min(cpu_pg),
        "db_cpu_mysql_s": min(cpu_my),
        "cpu_floor_s": floor,
        "vs_cpu_floor": round(wall / floor, 3),
        "steps": steps_meta,
        "load_avg_1m": load_avg(),
    }


def linked_child(base_url: str, n: int) -> dict[str, Any]:
    post_join(base_url, bodies.join_body(1000))
    took, got = timed(base_url, bodies.join_body(n))
    steps = {s["step_id"]: s for s in got["metadata"]["steps"]}
    parent, child = steps["s0"], steps["s1"]
    parent_end = parent["started_ms"] + parent["latency_ms"]
    return {
        "seconds": took,
        "parent_started_ms": parent["started_ms"],
        "parent_first_batch_ms": parent["first_batch_ms"],
        "parent_end_ms": parent_end,
        "child_started_ms": child["started_ms"],
        "child_first_batch_ms": child["first_batch_ms"],
        "child_lead_ms": round(parent_end - child["first_batch_ms"], 3),
        "child_strategy": child["strategy"],
        "child_native_queries": child["native_queries"],
        "steps": got["metadata"]["steps"],
        "load_avg_1m": load_avg(),
    }


def run(
    *,
    target_s: float = 1.0,
    repeat: int = 5,
    link_n: int = 1_000_000,
    max_rows: int = 10**12,
    record: bool = True,
) -> list[dict[str, Any]]:
    """`max_rows`: the events loaded (the steps never aggregate more)."""
    out = []
    with serve(max_rows=JOIN_MAX_ROWS) as s:
        ind = independent(s.base_url, target_s, repeat, max_rows)
        link = linked_child(s.base_url, link_n)
    for workload, metrics, params in (
        (INDEPENDENT_STEPS, ind, {"target_s": target_s}),
        (LINKED_CHILD_START, link, {"n_events": link_n}),
    ):
        if record:
            line = results.record(RUNNER, workload, metrics, params=params)
            emit(line)
            out.append(line)
        else:
            print(workload, {k: v for k, v in metrics.items() if k != "steps"})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline")
    parser.add_argument("--target-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--link-n", type=int, default=1_000_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    run(
        target_s=args.target_s,
        repeat=args.repeat,
        link_n=args.link_n,
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
