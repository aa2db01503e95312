"""`simple`: POST /v1/query/simple primary-key lookups against a real `sluice serve`, and the
same lookups straight through asyncpg in the same run (the practical limit).

    python -m bench.simple [--servers hypercorn uvicorn granian] [--workers 1 2]
        [--concurrency 1 8 32 128] [--duration 5]

CPU split on this 2-core machine: the server (1 or 2 worker processes), the load generator
(one process, a raw keep-alive HTTP/1.1 client, bench/load.py) and PostgreSQL share both
cores; nothing is pinned. The asyncpg baseline runs in one process with the same cores and
the same PostgreSQL, so both sides pay the database's CPU. With 2 workers the machine is
oversubscribed (2 workers + client + PostgreSQL on 2 cores); the figure says what a second
worker buys when the client shares the box.

The server runs sluice's default row cap (10,000, a dashboard config). Each sluice line
carries `vs_direct`: its requests/s over the direct asyncpg requests/s measured just before
at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import asdict
from typing import Any

from bench import bodies, datagen, results
from bench.datasets import Targets
from bench.load import run_load
from bench.peer import check
from bench.raw import simple_direct
from bench.server import LOOKUP_MAX_ROWS, SERVERS, serve

RUNNER = "sluice"
WARMUP_S = 1.0


def emit(line: dict[str, Any]) -> None:
    """One JSON line per measurement on stdout (the same line appended to results/)."""
    print(json.dumps(line, sort_keys=True), flush=True)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def direct(
    concurrencies: list[int], duration_s: float, n_users: int, *, record: bool = True
) -> dict[int, float]:
    """The asyncpg baseline at each concurrency; requests/s by concurrency."""
    out: dict[int, float] = {}
    for c in concurrencies:
        stats = asyncio.run(simple_direct(c, duration_s, n_users=n_users))
        out[c] = stats.req_per_s
        metrics = {**asdict(stats), "load_avg_1m": load_avg()}
        if record:
            emit(results.record("raw", results.ONE_ROW_LOOKUP, metrics, params={"concurrency": c}))
    return out


def sluice(
    concurrencies: list[int],
    duration_s: float,
    n_users: int,
    *,
    servers: tuple[str, ...] = SERVERS,
    workers: tuple[int, ...] = (1, 2),
    baseline: dict[int, float] | None = None,
    targets: Targets = Targets(),
    record: bool = True,
) -> list[dict[str, Any]]:
    """Every server at every worker count and concurrency; one measurement each."""
    lookups = bodies.lookup_bodies(n_users)
    lines = []
    for server in servers:
        for w in workers:
            with serve(targets, server=server, workers=w, max_rows=LOOKUP_MAX_ROWS) as s:
                url = f"{s.base_url}/v1/query/simple"
                got = check(s.base_url, "/v1/query/simple", lookups[0])
                if got["data"]["row_count"] != 1:
                    raise RuntimeError(f"lookup returned {got['data']['row_count']} rows")
                # every lookup text once through each worker, so the measured requests hit
                # the safety pipeline's per-text cache (the uncached cost is bench.safety_cost)
                run_load(url, lookups, concurrency=8, duration_s=3.0 * w, warmup_s=0.0)
                for c in concurrencies:
                    cpu0 = s.cpu_seconds()
                    res = run_load(
                        url, lookups, concurrency=c, duration_s=duration_s, warmup_s=WARMUP_S
                    )
                    # the server's own CPU per request: steadier than requests/s on a
                    # shared machine (the warm-up's requests estimated at the measured rate)
                    served = res.req_per_s * (duration_s + WARMUP_S)
                    cpu_us = (s.cpu_seconds() - cpu0) / max(1.0, served) * 1e6
                    metrics: dict[str, Any] = {
                        **res.as_metrics(),
                        "server_cpu_us_per_req": round(cpu_us, 1),
                        "load_avg_1m": load_avg(),
                    }
                    if baseline and baseline.get(c):
                        metrics["direct_req_per_s"] = baseline[c]
                        metrics["vs_direct"] = round(res.req_per_s / baseline[c], 3)
                    params = {"concurrency": c, "server": server, "workers": w}
                    if record:
                        line = results.record(
                            RUNNER, results.ONE_ROW_LOOKUP, metrics, params=params
                        )
                        emit(line)
                        lines.append(line)
                    else:
                        print(server, w, res)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simple")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--scale", type=int, default=10_000_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    n_users = datagen.spec_for(args.scale).users
    base = direct(args.concurrency, args.duration, n_users, record=not args.no_record)
    sluice(
        args.concurrency,
        args.duration,
        n_users,
        servers=tuple(args.servers),
        workers=tuple(args.workers),
        baseline=base,
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
