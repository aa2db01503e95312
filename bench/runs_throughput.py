"""Runs per minute that one `sluice serve` process completes with its queue kept full.

A client submits small federated runs (bench/bodies.join_body: events in PostgreSQL linked to
orders in MariaDB, aggregated in DuckDB) as fast as the server admits them: past
--max-queued-runs it answers 429 with Retry-After, which the client honours. Over the window
it counts runs completed, failed and cancelled (errors), 429s (back-pressure, not errors),
and the latency from submit to finish.

    python -m bench.runs_throughput [--seconds 30] [--events 1000] [--concurrent 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from typing import Any

import httpx

from bench import bodies, results
from bench.server import serve

WORKLOAD = "RUNS_SMALL_JOIN"


def _ts(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def measure(seconds: float, n_events: int, concurrent: int, queued: int) -> dict[str, Any]:
    config = json.dumps(bodies.join_body(n_events))
    submitted: list[str] = []
    throttled = 0
    limits = ("--max-concurrent-runs", str(concurrent), "--max-queued-runs", str(queued))
    with (
        serve(extra_args=limits) as sluice,
        httpx.Client(base_url=sluice.base_url, timeout=30) as http,
    ):
        start = time.time()
        end = start + seconds
        while time.time() < end:
            r = http.post(
                "/v1/runs", json={"config": config, "config_format": "json", "name": "bench-runs"}
            )
            if r.status_code == 202:
                submitted.append(r.json()["run_id"])
            elif r.status_code == 429:
                throttled += 1
                time.sleep(min(float(r.headers.get("retry-after", "1")), 0.25))
            else:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text}")
        records = [http.get(f"/v1/runs/{rid}").json() for rid in submitted]
        for rid in submitted:  # leave nothing running behind us
            http.post(f"/v1/runs/{rid}/cancel")
    done = [
        r
        for r in records
        if r["status"] == "completed" and (_ts(r["finished_at"]) or end + 1) <= end
    ]
    failed = [
        r
        for r in records
        if r["status"] in ("failed", "cancelled") and (_ts(r["finished_at"]) or end + 1) <= end
    ]
    latencies = [(_ts(r["finished_at"]) or 0) - (_ts(r["submitted_at"]) or 0) for r in done]
    return {
        "seconds": seconds,
        "runs_completed": len(done),
        "runs_per_minute": round(len(done) * 60.0 / seconds, 1),
        "runs_failed": len(failed),
        "errors": [r.get("error") for r in failed][:5],
        "submits_throttled_429": throttled,
        "submitted": len(submitted),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "rows_per_run": done[0]["records_written"] if done else None,
        "max_concurrent_runs": concurrent,
        "max_queued_runs": queued,
        "events_per_run": n_events,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--concurrent", type=int, default=4)
    p.add_argument("--queued", type=int, default=20)
    args = p.parse_args()
    metrics = measure(args.seconds, args.events, args.concurrent, args.queued)
    line = results.record(
        "runs", WORKLOAD, metrics, params={"seconds": args.seconds, "events": args.events}
    )
    print(json.dumps(line))


if __name__ == "__main__":
    main()
