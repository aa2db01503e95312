"""The targets of sluice issue 7, evaluated on the newest measurements (latest.json).

Each target reads the figures it compares from lines measured by the same suite in the same
run (the simple suite stores `vs_direct`, the federated one `vs_raw`); where a figure is
missing the target says so instead of passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import results

SIMPLE_C = 32
JOIN_N = 1_000_000


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]


def _find(lines: list[dict[str, Any]], runner: str, workload: str, **params: Any) -> list[dict]:
    return [
        x
        for x in lines
        if x["runner"] == runner
        and x["workload"] == workload
        and all(x.get("params", {}).get(k) == v for k, v in params.items())
    ]


def _best_simple(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    got = _find(lines, "sluice", results.ONE_ROW_LOOKUP, concurrency=SIMPLE_C)
    return max(got, key=lambda x: x["metrics"]["req_per_s"], default=None)


def evaluate(lines: list[dict[str, Any]]) -> list[Target]:
    out: list[Target] = []
    best = _best_simple(lines)
    default = _find(
        lines, "sluice", results.ONE_ROW_LOOKUP, concurrency=SIMPLE_C, server="hypercorn", workers=1
    )
    if best and "vs_direct" in best["metrics"]:
        m, p = best["metrics"], best["params"]
        extra = ""
        if default and "vs_direct" in default[-1]["metrics"]:
            extra = f"; default hypercorn x1: {default[-1]['metrics']['vs_direct']:.2f}x"
        out.append(
            Target(
                f"simple c={SIMPLE_C} vs direct asyncpg",
                ">= 0.6x requests/s",
                f"{m['req_per_s']:,.0f} vs {m['direct_req_per_s']:,.0f} req/s = "
                f"{m['vs_direct']:.2f}x ({p['server']} x{p['workers']}){extra}",
                m["vs_direct"] >= 0.6,
            )
        )
    else:
        out.append(Target(f"simple c={SIMPLE_C} vs direct asyncpg", ">= 0.6x", "-", None))
    peer = _find(lines, "peer", results.ONE_ROW_LOOKUP, concurrency=SIMPLE_C)
    if best and peer:
        ratio = best["metrics"]["req_per_s"] / max(peer[-1]["metrics"]["req_per_s"], 1e-9)
        out.append(
            Target(
                f"simple c={SIMPLE_C} vs the reference product",
                ">= 10x requests/s",
                f"{best['metrics']['req_per_s']:,.0f} vs {peer[-1]['metrics']['req_per_s']:,.1f}"
                f" req/s = {ratio:,.0f}x",
                ratio >= 10,
            )
        )
    else:
        out.append(Target(f"simple c={SIMPLE_C} vs the reference product", ">= 10x", "-", None))

    joins = {x["params"]["n_events"]: x for x in _find(lines, "sluice", results.LINKED_JOIN)}
    j = joins.get(JOIN_N)
    if j and "vs_raw" in j["metrics"]:
        m = j["metrics"]
        out.append(
            Target(
                "linked join 1M rows vs the raw drivers",
                "<= 1.5x the raw fetch time",
                f"{m['seconds']:.2f} s vs {m['raw_seconds']:.2f} s = {m['vs_raw']:.2f}x"
                f" ({m['rows_per_s']:,.0f} rows/s)",
                m["vs_raw"] <= 1.5,
            )
        )
    else:
        out.append(Target("linked join 1M rows vs the raw drivers", "<= 1.5x", "-", None))

    out.append(_peer_join(lines, joins))

    small = joins.get(100_000)
    if j and small:
        growth = j["metrics"]["rss_peak_bytes"] / small["metrics"]["rss_peak_bytes"] - 1
        out.append(
            Target(
                "peak server RSS, 100k -> 1M rows",
                "grows < 30%",
                f"{small['metrics']['rss_peak_bytes'] / 2**20:.0f} MiB -> "
                f"{j['metrics']['rss_peak_bytes'] / 2**20:.0f} MiB = {growth:+.0%}",
                growth < 0.30,
            )
        )
    else:
        out.append(Target("peak server RSS, 100k -> 1M rows", "grows < 30%", "-", None))

    ind = _find(lines, "sluice", "INDEPENDENT_STEPS")
    if ind:
        m = ind[-1]["metrics"]
        out.append(
            Target(
                "two independent ~1 s steps",
                "wall <= 1.1x the slowest step",
                f"{m['seconds']:.2f} s vs slowest {m['slowest_alone_s']:.2f} s = "
                f"{m['vs_slowest']:.2f}x (sum {m['sum_alone_s']:.2f} s"
                + (
                    f"; the databases' CPU for both: {m['db_cpu_pg_s'] + m['db_cpu_mysql_s']:.2f}"
                    f" s, so 2 cores allow {m['cpu_floor_s']:.2f} s at best:"
                    f" {m['vs_cpu_floor']:.2f}x that)"
                    if "cpu_floor_s" in m
                    else ")"
                ),
                m["vs_slowest"] <= 1.1,
            )
        )
    else:
        out.append(Target("two independent ~1 s steps", "<= 1.1x", "-", None))

    link = _find(lines, "sluice", "LINKED_CHILD_START")
    if link:
        m = link[-1]["metrics"]
        out.append(
            Target(
                "linked child starts before its parent ends",
                "child's first query before the parent's end",
                f"child's first batch at {m['child_first_batch_ms']:.0f} ms, parent ended at "
                f"{m['parent_end_ms']:.0f} ms ({m['child_lead_ms']:.0f} ms earlier)",
                m["child_lead_ms"] > 0,
            )
        )
    else:
        out.append(Target("linked child starts before its parent ends", "-", "-", None))

    safety = _find(lines, "sluice", results.SAFETY_PIPELINE, mode="cached")
    unc = _find(lines, "sluice", results.SAFETY_PIPELINE, mode="uncached")
    if safety:
        m = safety[-1]["metrics"]
        tail = f"; uncached {unc[-1]['metrics']['median_us']:.0f} us" if unc else ""
        out.append(
            Target(
                "safety pipeline, cached simple query",
                "median < 0.2 ms added",
                f"{m['median_us']:.1f} us median (p99 {m['p99_us']:.1f} us){tail}",
                m["median_us"] < 200,
            )
        )
    else:
        out.append(Target("safety pipeline, cached simple query", "< 0.2 ms", "-", None))
    return out


def _peer_join(lines: list[dict[str, Any]], joins: dict[int, dict[str, Any]]) -> Target:
    """The reference product's linked join fails; compare its unlinked equivalent (both
    steps independent, orders bounded by id range) at the largest N it finished."""
    name = "linked join vs the reference product"
    peer = _find(lines, "peer", results.LINKED_JOIN)
    linked_failed = [x for x in peer if x["params"].get("form") == "linked"]
    done = [
        x
        for x in peer
        if x["params"].get("form") == "range"
        and isinstance(x["metrics"].get("seconds"), int | float)
        and x["params"]["n_events"] in joins
    ]
    if not done:
        return Target(name, ">= 20x faster at 1M rows", "-", None)
    p = max(done, key=lambda x: x["params"]["n_events"])
    n = p["params"]["n_events"]
    ours = joins[n]["metrics"]["seconds"]
    ratio = p["metrics"]["seconds"] / ours
    failed = any("failed" in x["metrics"] for x in linked_failed)
    note = "its linked form failed; " if failed else ""
    at_1m = "" if n == JOIN_N else f" (measured at {n:,} rows: the peer is too slow for 1M)"
    return Target(
        name,
        ">= 20x faster at 1M rows",
        f"{note}unlinked equivalent {p['metrics']['seconds']:.2f} s vs sluice linked "
        f"{ours:.2f} s at {n:,} rows = {ratio:,.0f}x{at_1m}; peer measured {p['timestamp']}",
        ratio >= 20,
    )


def markdown(targets: list[Target]) -> list[str]:
    md = ["| target | goal | measured | verdict |", "|---|---|---|---|"]
    md += [f"| {t.name} | {t.goal} | {t.measured} | {t.verdict} |" for t in targets]
    return md
