"""Entry point of the benchmark suite: every runner in one run, then latest.md and the plots.

    python -m bench.run --quick|--full [--only simple,dashboard,federated,pipeline,safety,peer]

--quick (`make bench`, a few minutes): lookups at concurrency 1/8/32/128 for 3 s each on
hypercorn, uvicorn and granian with 1 and 2 workers; joins of 10k, 100k and 1M events; the
reference product at concurrency 1 and 32 and its 10k join. --full (`make bench-full`):
8 s per concurrency, joins up to 10M events, the reference product at every concurrency and
its 100k join (about three minutes on its own).

The dataset is loaded on first use (bench/datasets.py, idempotent); a loaded dataset with at
least the events a run needs is used as it is, whatever its scale. Each measurement is
printed as one JSON line and appended to bench/results/<runner>.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import (
    bodies,
    dashboard,
    datagen,
    federated,
    peer,
    pipeline,
    report,
    results,
    safety_cost,
    simple,
)
from bench.datasets import Targets, load, pg_stored_spec
from bench.simple import emit

SUITES = ("simple", "dashboard", "federated", "pipeline", "safety", "peer")


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    duration_s: float
    servers: tuple[str, ...]
    workers: tuple[int, ...]
    join_n: tuple[int, ...]
    peer_concurrency: tuple[int, ...]
    peer_duration_s: float
    peer_join_n: tuple[int, ...]
    scale: int


QUICK = Plan(
    concurrency=(1, 8, 32, 128),
    duration_s=3.0,
    servers=("hypercorn", "uvicorn", "granian"),
    workers=(1, 2),
    join_n=(10_000, 100_000, 1_000_000),
    peer_concurrency=(1, 32),
    peer_duration_s=8.0,
    peer_join_n=(10_000,),
    scale=1_000_000,
)
FULL = Plan(
    concurrency=(1, 8, 32, 128),
    duration_s=8.0,
    servers=("hypercorn", "uvicorn", "granian"),
    workers=(1, 2),
    join_n=(10_000, 100_000, 1_000_000, 10_000_000),
    peer_concurrency=(1, 8, 32, 128),
    peer_duration_s=10.0,
    peer_join_n=(10_000, 100_000),
    scale=10_000_000,
)


async def _stored_spec(targets: Targets) -> datagen.Spec | None:
    try:
        conn = await asyncpg.connect(targets.pg_dsn)
    except (OSError, asyncpg.PostgresError):
        return None  # no database yet
    try:
        text = await pg_stored_spec(conn)
    finally:
        await conn.close()
    if text is None:
        return None
    return datagen.Spec(**json.loads(text))


def ensure_dataset(scale: int, targets: Targets = Targets()) -> datagen.Spec:
    """The loaded spec if it has at least `scale` events, else load spec_for(scale) into
    PostgreSQL and MariaDB (the loader skips a target that already holds it)."""
    have = asyncio.run(_stored_spec(targets))
    spec = have if have is not None and have.events >= scale else datagen.spec_for(scale)
    t0 = time.perf_counter()
    reports = asyncio.run(load(spec, targets, only=("pg", "mysql")))
    for r in reports:
        if not r.skipped:
            print(f"dataset: {r} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return spec


def run_peer(plan: Plan, spec: datagen.Spec) -> None:
    peer.ensure_installed()
    version = {"faz-core": peer.peer_version()}
    with peer.serve() as p:
        for c in plan.peer_concurrency:
            res = peer.simple_lookup(p.base_url, spec.users, c, plan.peer_duration_s)
            metrics: dict[str, Any] = {**res.as_metrics(), "load_avg_1m": simple.load_avg()}
            emit(
                results.record(
                    "peer",
                    results.ONE_ROW_LOOKUP,
                    metrics,
                    params={"concurrency": c},
                    extra_versions=version,
                )
            )
        for n in plan.peer_join_n:
            forms = {
                "linked": bodies.join_body(n),
                "range": bodies.join_range_body(n, datagen.last_order_of(spec, n)),
            }
            for form, body in forms.items():
                try:
                    got = peer.timed_query(p.base_url, body, repeat=1)
                except Exception as exc:  # the peer's failure is a result, reported as such
                    metrics = {"failed": str(exc)[:1000]}
                else:
                    metrics = {k: v for k, v in got.items() if k != "rows"}
                emit(
                    results.record(
                        "peer",
                        results.LINKED_JOIN,
                        metrics,
                        params={"n_events": n, "form": form, "orders_db": "mysql"},
                        extra_versions=version,
                    )
                )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="a few minutes (make bench)")
    size.add_argument("--full", action="store_true", help="joins up to 10M events")
    parser.add_argument(
        "--only", default=",".join(SUITES), help="comma list of " + ",".join(SUITES)
    )
    args = parser.parse_args(argv)
    args.only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(args.only) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites {sorted(unknown)}; known: {', '.join(SUITES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # asyncmy logs every server note ("database exists" after CREATE DATABASE IF NOT EXISTS)
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    plan = FULL if args.full else QUICK
    started = time.perf_counter()
    spec = ensure_dataset(max(plan.scale, max(plan.join_n)))
    print(f"dataset: {spec.users} users, {spec.orders} orders, {spec.events} events", flush=True)
    if "safety" in args.only:
        safety_cost.run()
    if "simple" in args.only:
        base = simple.direct(list(plan.concurrency), plan.duration_s, spec.users)
        simple.sluice(
            list(plan.concurrency),
            plan.duration_s,
            spec.users,
            servers=plan.servers,
            workers=plan.workers,
            baseline=base,
        )
    if "dashboard" in args.only:
        # wrk against sluice and the thinnest service: bench/results/dashboard.md
        dashboard.main(["--duration", str(plan.duration_s), "--label", "make bench"])
    if "federated" in args.only:
        federated.run([n for n in plan.join_n if n <= spec.events])
    if "pipeline" in args.only:
        pipeline.run(link_n=min(1_000_000, spec.events), max_rows=spec.events)
    if "peer" in args.only:
        run_peer(plan, spec)
    out = report.render()
    print(f"bench: {time.perf_counter() - started:.0f} s; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
