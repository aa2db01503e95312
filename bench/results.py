"""Benchmark results: one JSON line per measurement in bench/results/<runner>.jsonl, and
bench/results/latest.json holding the newest measurement of every (runner, workload).

Each line carries the runner, the workload (a named constant below), its metrics, and the
context needed to compare runs: versions, git SHA, machine, timestamp.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Workloads, named once so every runner and report agrees on them.
ONE_ROW_LOOKUP = "ONE_ROW_LOOKUP"  # SELECT * FROM users WHERE id = k, at a concurrency
FETCH_EVENTS = "FETCH_EVENTS"  # n events rows from PostgreSQL into the client
FETCH_ORDERS_BY_KEYS = "FETCH_ORDERS_BY_KEYS"  # orders rows for a key set, from MariaDB
LINKED_JOIN = "LINKED_JOIN"  # events (PostgreSQL) -> linked orders (MariaDB) -> aggregate
LINKED_JOIN_100K = "LINKED_JOIN_100K"
LINKED_JOIN_1M = "LINKED_JOIN_1M"
FANOUT_8_STEPS = "FANOUT_8_STEPS"  # eight independent steps in one federated query
SAFETY_PIPELINE = "SAFETY_PIPELINE"  # the five stages over one query, in process

_PACKAGES = (
    "sluice",
    "duckdb",
    "asyncpg",
    "asyncmy",
    "pyarrow",
    "adbc-driver-postgresql",
    "httpx",
    "hypercorn",
    "starlette",
    "msgspec",
    "sqlglot",
    "numpy",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@cache
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: _version(name) for name in _PACKAGES})
    return out


@cache
def git_sha() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return done.stdout.strip() + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@cache
def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
    }


def record(
    runner: str,
    workload: str,
    metrics: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    extra_versions: dict[str, str | None] | None = None,
    results_dir: Path = RESULTS_DIR,
) -> dict[str, Any]:
    """Append one measurement to <runner>.jsonl and refresh latest.json; returns the line.

    Args:
        runner: who measured: "raw", "peer", "sluice", ...
        workload: one of the constants above.
        metrics: the numbers (req_per_s, p50_ms, seconds, rows, ...).
        params: what distinguishes this measurement within the workload (concurrency, n).
        extra_versions: versions only this runner knows (the peer's own package version).
    """
    line = {
        "runner": runner,
        "workload": workload,
        "params": params or {},
        "metrics": metrics,
        "versions": {**versions(), **(extra_versions or {})},
        "git_sha": git_sha(),
        "machine": machine(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    with (results_dir / f"{runner}.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    _update_latest(results_dir, line)
    return line


def key_of(line: dict[str, Any]) -> str:
    """What a newer measurement replaces: same runner, workload and params."""
    params = json.dumps(line.get("params", {}), sort_keys=True)
    return f"{line['runner']}|{line['workload']}|{params}"


def _update_latest(results_dir: Path, line: dict[str, Any]) -> None:
    path = results_dir / "latest.json"
    latest = json.loads(path.read_text()) if path.exists() else {}
    latest[key_of(line)] = line
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(latest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read(path: Path) -> list[dict[str, Any]]:
    """Measurements from a <runner>.jsonl or latest.json file, oldest first."""
    text = path.read_text()
    if path.suffix == ".json":
        return sorted(json.loads(text).values(), key=lambda d: d["timestamp"])
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def newest(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest measurement per key_of."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        out[key_of(line)] = line
    return out


if __name__ == "__main__":
    json.dump(
        {"versions": versions(), "git_sha": git_sha(), "machine": machine()}, sys.stdout, indent=1
    )


def latency_summary(ms: Any) -> dict[str, float]:
    """p50/p95/p99/mean of latencies in milliseconds (a numpy array); NaN when empty."""
    import numpy as np

    if len(ms) == 0:
        return dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "mean_ms"), float("nan"))
    p50, p95, p99 = (float(v) for v in np.percentile(ms, (50, 95, 99)))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": float(np.mean(ms))}
