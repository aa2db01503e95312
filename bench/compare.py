"""Render two result files (a <runner>.jsonl or latest.json each) as a Markdown table.

    python -m bench.compare bench/results/peer.jsonl bench/results/raw.jsonl

Rows pair the newest measurement of each workload and params found in both files; the
ratio is B relative to A on the workload's headline metric, written so that above 1 means B
did better.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench import results

# headline metric per workload: (metric names to try, higher is better)
HEADLINES: dict[str, tuple[tuple[str, ...], bool]] = {
    results.ONE_ROW_LOOKUP: (("req_per_s",), True),
    results.LINKED_JOIN: (("seconds", "total_s"), False),
    results.LINKED_JOIN_100K: (("seconds", "total_s"), False),
    results.LINKED_JOIN_1M: (("seconds", "total_s"), False),
    results.FETCH_EVENTS: (("seconds", "adbc_s"), False),
    results.FETCH_ORDERS_BY_KEYS: (("seconds",), False),
    results.FANOUT_8_STEPS: (("seconds",), False),
    # the pipeline's cost per query in microseconds (the table showed "failed" for it)
    results.SAFETY_PIPELINE: (("median_us",), False),
}


def headline(line: dict[str, Any]) -> tuple[str, float | None, bool]:
    """The workload's headline metric: name, value (None if absent or failed), direction."""
    names, higher = HEADLINES.get(line["workload"], (("seconds",), False))
    for name in names:
        value = line["metrics"].get(name)
        if isinstance(value, int | float):
            return name, float(value), higher
    return names[0], None, higher


def _match_key(line: dict[str, Any]) -> str:
    params = {k: v for k, v in line.get("params", {}).items() if k not in ("form", "orders_db")}
    return f"{line['workload']}|{json.dumps(params, sort_keys=True)}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "failed"
    return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"


def _params(line: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(line.get("params", {}).items())) or "-"


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    """Markdown table of the measurements present in both."""
    newest_a = {_match_key(x): x for x in a}
    newest_b = {_match_key(x): x for x in b}
    name_a = a[-1]["runner"] if a else "A"
    name_b = b[-1]["runner"] if b else "B"
    out = [
        f"| workload | params | metric | {name_a} | {name_b} | {name_b} vs {name_a} |",
        "|---|---|---|---:|---:|---:|",
    ]
    for key in sorted(newest_a.keys() & newest_b.keys()):
        la, lb = newest_a[key], newest_b[key]
        metric, va, higher = headline(la)
        _, vb, _ = headline(lb)
        if va and vb:
            ratio = f"{(vb / va if higher else va / vb):.2f}x"
        else:
            ratio = "-"
        out.append(
            f"| {la['workload']} | {_params(la)} | {metric} | {_fmt(va)} | {_fmt(vb)} | {ratio} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    print(compare(results.read(args.a), results.read(args.b)), end="")


if __name__ == "__main__":
    main()
