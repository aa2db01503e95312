"""bench/results/latest.md: every newest measurement in one table, and PNG plots of
throughput against concurrency and of join time against rows, one line per runner.

    python -m bench.report [--results bench/results]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import results, targets
from bench.compare import _fmt, _params, headline

LABEL_PARAMS = ("server", "workers", "form", "orders_db")
RUNNER_LABELS = {"raw": "raw drivers", "peer": "reference product"}


def _series(
    lines: list[dict[str, Any]], workload: str, x_param: str, y: str | None = None
) -> dict[str, list[tuple[float, float]]]:
    """runner (plus form/orders_db, when present) -> sorted (x, y) points."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in lines:
        if line["workload"] != workload or x_param not in line.get("params", {}):
            continue
        params = line["params"]
        label = RUNNER_LABELS.get(line["runner"], line["runner"]) + "".join(
            f" {'x' if k == 'workers' else ''}{params[k]}" for k in LABEL_PARAMS if k in params
        )
        if y is None:
            _, value, _ = headline(line)
        else:
            value = line["metrics"].get(y)
        if isinstance(value, int | float):
            out[label].append((float(params[x_param]), float(value)))
    return {k: sorted(v) for k, v in out.items()}


def _plot(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool,
) -> bool:
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(series.items()):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _load_note(lines: list[dict[str, Any]]) -> list[str]:
    """The machine's 1-minute load average while measuring: on two cores anything above
    ~2 means other processes took CPU from the server, the client and the databases."""
    loads = [x["metrics"]["load_avg_1m"] for x in lines if "load_avg_1m" in x["metrics"]]
    if not loads:
        return []
    return [
        f"1-minute load average while measuring: {min(loads):.1f} to {max(loads):.1f} "
        "(2 cores shared by the server, the load generator, PostgreSQL and MariaDB; above "
        "~2, other processes on the machine were competing for the same cores).",
        "",
    ]


def _simple_table(lines: list[dict[str, Any]]) -> list[str]:
    """Concurrency rows, one column per side (direct asyncpg, each server x workers, peer)."""
    cols: dict[str, dict[int, float]] = defaultdict(dict)
    for line in lines:
        if line["workload"] != results.ONE_ROW_LOOKUP:
            continue
        p = line["params"]
        name = {"raw": "direct asyncpg", "peer": "reference"}.get(line["runner"], line["runner"])
        if "server" in p:
            name = f"{p['server']} x{p['workers']}"
        cols[name][int(p["concurrency"])] = float(line["metrics"]["req_per_s"])
    if not cols:
        return []
    names = sorted(cols, key=lambda n: (n != "direct asyncpg", n == "reference", n))
    levels = sorted({c for col in cols.values() for c in col})
    out = ["| concurrency | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
    for c in levels:
        cells = [_fmt(cols[n][c]) if c in cols[n] else "" for n in names]
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return out


def render(results_dir: Path = results.RESULTS_DIR) -> Path:
    """Write latest.md (and its plots) from latest.json; returns the Markdown path."""
    lines = results.read(results_dir / "latest.json")
    lines.sort(key=lambda x: (x["workload"], x["runner"], _params(x)))
    md = ["# Benchmark results", "", "Produced by `python -m bench.run` (`make bench`).", ""]
    if lines:
        m = lines[-1]["machine"]
        md += [
            f"Machine: {m['nproc']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, {m['cpu_model']}."
            f" Git {lines[-1]['git_sha']}.",
            "",
            *_load_note(lines),
            "## Targets (sluice issue 7)",
            "",
            *targets.markdown(targets.evaluate(lines)),
            "",
            "## One-row lookup, requests/s by concurrency",
            "",
            *_simple_table(lines),
            "",
            "## Every measurement",
            "",
            "| workload | runner | params | metric | value | p50 ms | p99 ms | when |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for line in lines:
            metric, value, _ = headline(line)
            p50 = line["metrics"].get("p50_ms")
            p99 = line["metrics"].get("p99_ms")
            md.append(
                f"| {line['workload']} | {line['runner']} | {_params(line)} | {metric} "
                f"| {_fmt(value)} | {_fmt(p50) if p50 is not None else ''} "
                f"| {_fmt(p99) if p99 is not None else ''} | {line['timestamp']} |"
            )
        md.append("")
    plots = [
        (
            _series(lines, results.ONE_ROW_LOOKUP, "concurrency"),
            "throughput.png",
            "One-row lookup throughput",
            "concurrency",
            "requests/s",
            True,
        ),
        (
            _series(lines, results.LINKED_JOIN, "n_events"),
            "join_time.png",
            "Linked join (events in PostgreSQL, orders in MariaDB)",
            "events rows",
            "seconds",
            True,
        ),
    ]
    for series, name, title, xlabel, ylabel, logy in plots:
        if _plot(series, results_dir / name, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy):
            md += [f"![{title}]({name})", ""]
    out = results_dir / "latest.md"
    out.write_text("\n".join(md))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("--results", type=Path, default=results.RESULTS_DIR)
    print(render(parser.parse_args(argv).results))


if __name__ == "__main__":
    main()
