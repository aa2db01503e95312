"""`spill`: the 10M-event federated join through `sluice serve`, unbounded against a 1 GB
`limits.memory_budget`, side by side in one run (issue 19).

    python -m bench.datasets --scale 10000000 --only pg --database spill_bench
    python -m bench.spill [--n 10000000] [--budget 1GB] [--rounds 2] [--database spill_bench]

The join is bench/bodies.py join_body with both steps on PostgreSQL (events -> their orders,
linked by id, aggregated per status in the merge). Each measured join runs on a fresh
server (so one join's memory does not count against the next), after a warm-up join of
1,000 events; a thread samples the summed RSS of the server's process tree every 20 ms
(bench/server.py RssSampler: the whole process, DuckDB, Arrow and Python included). Modes
alternate (unbounded, bounded, unbounded, ...) so a change in the machine's load hits both;
the median of each mode's rounds is reported, and both answers must be equal.

"Unbounded" is a 16 GB budget: no step reaches `spill_after_bytes` (768 MiB there), the
shared DuckDB may use 3 GB, which is the path before spilling existed. Results go to
bench/results/spill.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench import bodies
from bench.datasets import Targets
from bench.federated import post_join
from bench.server import JOIN_MAX_ROWS, RssSampler, serve
from bench.simple import load_avg

OUT = Path(__file__).resolve().parent / "results" / "spill.md"
UNBOUNDED = "16GB"
MiB = 1024**2


def one_join(n: int, targets: Targets, budget: str) -> dict[str, Any]:
    body = bodies.join_body(n, orders_db=bodies.PG_NAME)
    limits = {"memory_budget": budget}
    with serve(targets, pg_only=True, max_rows=JOIN_MAX_ROWS, limits=limits, pool_size=8) as s:
        post_join(s.base_url, bodies.join_body(1000, orders_db=bodies.PG_NAME))
        sampler = RssSampler(s.pid)
        before = sampler.sample()
        cpu0 = s.cpu_seconds()
        with sampler:
            t0 = time.perf_counter()
            got = post_join(s.base_url, body)
            seconds = time.perf_counter() - t0
        cpu = s.cpu_seconds() - cpu0
    meta = got["metadata"]
    memory = meta.get("memory") or {}
    return {
        "budget": budget,
        "seconds": seconds,
        "cpu": cpu,
        "rss_before": before,
        "rss_peak": sampler.peak,
        "reported_peak": memory.get("peak_rss_bytes"),
        "spilled": memory.get("spilled_steps", []),
        "spilled_bytes": memory.get("spilled_bytes", 0),
        "merge_limit": memory.get("merge_memory_limit_bytes"),
        "merge_ms": meta["merge_latency_ms"],
        "rows": {st["step_id"]: st["rows_returned"] for st in meta["steps"]},
        "answer": got["data"]["rows"],
    }


def run(n: int, budget: str, rounds: int, targets: Targets) -> str:
    load_before = load_avg()
    runs: dict[str, list[dict[str, Any]]] = {UNBOUNDED: [], budget: []}
    for _ in range(rounds):
        for mode in (UNBOUNDED, budget):
            got = one_join(n, targets, mode)
            runs[mode].append(got)
            print(
                f"{mode}: {got['seconds']:.2f}s, cpu {got['cpu']:.2f}s, "
                f"peak RSS {got['rss_peak'] / MiB:.0f} MiB, "
                f"spilled {got['spilled']}",
                flush=True,
            )
    answers = {repr(r["answer"]) for rs in runs.values() for r in rs}
    if len(answers) != 1:
        raise RuntimeError("the unbounded and bounded joins gave different answers")
    load_after = load_avg()

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[mode])

    u_s, b_s = med(UNBOUNDED, "seconds"), med(budget, "seconds")
    u_rss, b_rss = med(UNBOUNDED, "rss_peak"), med(budget, "rss_peak")
    limit_bytes = _bytes(budget)
    first = runs[budget][0]
    lines = [
        "# Spill by default: the 10M-event join unbounded vs. a 1 GB memory budget (issue 19)",
        "",
        f"`python -m bench.spill --n {n} --budget {budget} --rounds {rounds}`: events "
        f"({first['rows']['s0']:,} rows) and their orders ({first['rows']['s1']:,} rows, linked "
        "by id) from PostgreSQL, joined and aggregated per status in the merge, through one "
        "hypercorn worker. Each join on a fresh server after a 1,000-event warm-up; peak RSS is "
        "the server's whole process tree sampled every 20 ms; the modes alternate and each "
        "figure is the median of its rounds. Both modes gave the same answer.",
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on 2 cores "
        "shared with other work: absolute times move with it, the ratios are side by side.",
        "",
        "| mode | time (s) | server CPU (s) | peak server RSS (MiB) | RSS before the join (MiB) "
        "| spilled steps | "
        "Parquet written (MiB) | merge memory_limit (MiB) | merge (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in (UNBOUNDED, budget):
        rs = runs[mode]
        r0 = rs[0]
        limit = r0["merge_limit"]
        lines.append(
            f"| memory_budget {mode} | {med(mode, 'seconds'):.2f} | {med(mode, 'cpu'):.1f} | "
            f"{med(mode, 'rss_peak') / MiB:.0f} | {med(mode, 'rss_before') / MiB:.0f} | "
            f"{', '.join(r0['spilled']) or '-'} | {r0['spilled_bytes'] / MiB:.0f} | "
            f"{limit / MiB:.0f} | {med(mode, 'merge_ms'):.0f} |"
            if limit
            else f"| memory_budget {mode} | {med(mode, 'seconds'):.2f} | {med(mode, 'cpu'):.1f} | "
            f"{med(mode, 'rss_peak') / MiB:.0f} | {med(mode, 'rss_before') / MiB:.0f} | - | 0 | "
            f"- (shared sink) | {med(mode, 'merge_ms'):.0f} |"
        )
    rss_ok = b_rss <= limit_bytes
    time_ok = b_s / u_s <= 1.3
    lines += [
        "",
        f"- time ratio bounded / unbounded: **{b_s / u_s:.2f}x** (target <= 1.3x: "
        f"{'met' if time_ok else 'missed'}); server CPU seconds bounded / unbounded: "
        f"**{med(budget, 'cpu') / med(UNBOUNDED, 'cpu'):.2f}x** (the server's own work, which "
        "the machine's load moves less than wall time)",
        f"- peak RSS bounded: **{b_rss / MiB:.0f} MiB** against the {budget} budget "
        f"({'within' if rss_ok else 'over'}); unbounded {u_rss / MiB:.0f} MiB "
        f"({u_rss / b_rss:.2f}x the bounded peak)",
        "- rounds (wall s / server CPU s / MiB peak): "
        + "; ".join(
            f"{mode}: "
            + ", ".join(
                f"{r['seconds']:.1f}s/{r['cpu']:.1f}s cpu/{r['rss_peak'] / MiB:.0f}"
                for r in runs[mode]
            )
            for mode in runs
        ),
        "",
    ]
    return "\n".join(lines)


def _bytes(size: str) -> int:
    from engine.memory import parse_size

    return parse_size(size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spill")
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--budget", default="1GB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", default="spill_bench")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    targets = Targets(pg_database=args.database, mysql_database=args.database)
    report = run(args.n, args.budget, args.rounds, targets)
    print(report)
    if not args.no_record:
        OUT.write_text(report)


if __name__ == "__main__":
    main()
