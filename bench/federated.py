"""`federated`: the linked join (bench/bodies.py join_body) through a real `sluice serve`,
against the raw drivers fetching the same rows in the same run.

    python -m bench.federated [--n 100000 1000000] [--server hypercorn]

For each N: the raw drivers first (events by ADBC, their orders by asyncmy, the merge in
DuckDB, one after another: bench/raw.py linked_join), then sluice on a fresh server (so one
N's memory does not count against the next): one warm-up join of 1,000 events, then the
measured join while a thread samples the summed RSS of the server's process tree every
20 ms. `vs_raw` = sluice seconds / raw seconds (lower is better); `rss_growth_bytes` is the
peak during the join over the RSS just before it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from bench import bodies, results
from bench.datasets import Targets
from bench.raw import linked_join
from bench.server import JOIN_MAX_ROWS, RssSampler, serve
from bench.simple import emit, load_avg

RUNNER = "sluice"


def raw_join(n: int, *, record: bool = True) -> dict[str, Any]:
    got = asyncio.run(linked_join(n))
    got["load_avg_1m"] = load_avg()
    if record:
        emit(results.record("raw", results.LINKED_JOIN, got, params={"n_events": n}))
    return got


def post_join(base_url: str, body: dict[str, Any], timeout_s: float = 3600.0) -> dict[str, Any]:
    resp = httpx.post(f"{base_url}/v1/query", json=body, timeout=timeout_s)
    if resp.status_code != 200:
        raise RuntimeError(f"/v1/query answered {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def sluice_join(
    n: int,
    *,
    server: str = "hypercorn",
    targets: Targets = Targets(),
    raw_s: float | None = None,
    record: bool = True,
) -> dict[str, Any]:
    with serve(targets, server=server, workers=1, max_rows=JOIN_MAX_ROWS) as s:
        post_join(s.base_url, bodies.join_body(1000))  # pools, prepared statements, DuckDB
        sampler = RssSampler(s.pid)
        before = sampler.sample()
        with sampler:
            t0 = time.perf_counter()
            got = post_join(s.base_url, bodies.join_body(n))
            seconds = time.perf_counter() - t0
    meta = got["metadata"]
    steps = {st["step_id"]: st for st in meta["steps"]}
    joined = sum(int(r["events"]) for r in got["data"]["rows"])
    metrics: dict[str, Any] = {
        "seconds": seconds,
        "rows": steps["s0"]["rows_returned"],
        "orders_rows": steps["s1"]["rows_returned"],
        "rows_per_s": steps["s0"]["rows_returned"] / seconds,
        "events_joined": joined,
        "server_ms": meta["execution_time_ms"],
        "merge_ms": meta["merge_latency_ms"],
        "steps": meta["steps"],
        "rss_before_bytes": before,
        "rss_peak_bytes": sampler.peak,
        "rss_growth_bytes": sampler.peak - before,
        "load_avg_1m": load_avg(),
    }
    if raw_s:
        metrics["raw_seconds"] = raw_s
        metrics["vs_raw"] = round(seconds / raw_s, 3)
    if record:
        emit(
            results.record(
                RUNNER, results.LINKED_JOIN, metrics, params={"n_events": n, "server": server}
            )
        )
    return metrics


def run(ns: list[int], *, server: str = "hypercorn", record: bool = True) -> None:
    for n in ns:
        raw = raw_join(n, record=record)
        got = sluice_join(n, server=server, raw_s=raw["total_s"], record=record)
        if raw["events_joined"] != got["events_joined"]:
            raise RuntimeError(
                f"n={n}: sluice joined {got['events_joined']} events, the raw drivers "
                f"{raw['events_joined']}"
            )
        if not record:
            print(n, raw["total_s"], got["seconds"], got["rss_peak_bytes"] / 2**20)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.federated")
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--server", default="hypercorn")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    run(args.n, server=args.server, record=not args.no_record)


if __name__ == "__main__":
    main()
