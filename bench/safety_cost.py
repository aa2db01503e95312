"""`safety`: what the safety pipeline adds per query, in-process (no HTTP, no database).

    python -m bench.safety_cost [--calls 5000]

`safety.pipeline.check` on the request the simple endpoint builds for the one-row lookup,
with the benchmark server's config:
- cached: the same text every call (the parse, analysis and rewrite are cached by text);
- template: a unique text every call (a different key literal), served by the statement
  template its shape learned (safety/languages/sql_template.py);
- uncached: a unique token shape every call (a new column alias), so sqlglot parses, the
  stages analyse and GUARDRAILS rewrites each time.
Median, p95 and p99 of per-call times (perf_counter_ns around the call alone).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies, results
from bench.datasets import Targets
from bench.server import LOOKUP_MAX_ROWS, config_yaml
from bench.simple import emit, load_avg
from engine.config import Config, load_config_text
from safety import pipeline
from safety.types import CheckRequest, Step

RUNNER = "sluice"


def bench_config() -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        text = config_yaml(Targets(), Path(tmp), max_rows=LOOKUP_MAX_ROWS)
    return load_config_text(text, source="bench.yaml")


def lookup_request(user_id: int, alias: str | None = None) -> CheckRequest:
    body = bodies.lookup_body(user_id)
    if alias is not None:  # a new token shape: no template can serve it
        body["query"] = body["query"].replace("SELECT *", f"SELECT *, id AS {alias}")
    return CheckRequest(
        steps=[
            Step(
                database=body["database"],
                table=body["table"],
                query=body["query"],
                language=body["language"],
            )
        ],
        transport="rest/local",
        client="127.0.0.1",
        body_bytes=200,
    )


def _stats(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "median_us": float(np.median(us)),
        "p95_us": float(np.percentile(us, 95)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "calls": len(ns),
    }


def measure(calls: int = 5000, uncached_calls: int = 1000) -> dict[str, dict[str, Any]]:
    config = bench_config()
    same = lookup_request(42)
    for _ in range(200):  # warm: imports, caches, the cached text's parse
        outcome = pipeline.check(same, config)
    if outcome.block is not None:
        raise RuntimeError(f"the lookup was blocked: {outcome.block}")
    gc.collect()
    cached: list[int] = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        pipeline.check(same, config)
        cached.append(time.perf_counter_ns() - t0)
    # unique texts of one shape (a new key each): a statement template serves them
    requests = [lookup_request(10_000_000 + i) for i in range(uncached_calls)]
    template: list[int] = []
    for req in requests:
        t0 = time.perf_counter_ns()
        pipeline.check(req, config)
        template.append(time.perf_counter_ns() - t0)
    # unique shapes: sqlglot parses, the stages analyse and GUARDRAILS generates each time
    requests = [lookup_request(20_000_000 + i, f"a{i}") for i in range(uncached_calls)]
    uncached: list[int] = []
    for req in requests:
        t0 = time.perf_counter_ns()
        pipeline.check(req, config)
        uncached.append(time.perf_counter_ns() - t0)
    return {"cached": _stats(cached), "template": _stats(template), "uncached": _stats(uncached)}


def run(calls: int = 5000, *, record: bool = True) -> list[dict[str, Any]]:
    out = []
    for mode, metrics in measure(calls).items():
        metrics["load_avg_1m"] = load_avg()
        if record:
            line = results.record(RUNNER, results.SAFETY_PIPELINE, metrics, params={"mode": mode})
            emit(line)
            out.append(line)
        else:
            print(mode, metrics)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.safety_cost")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    run(args.calls, record=not args.no_record)


if __name__ == "__main__":
    main()
