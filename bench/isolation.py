"""Another client's latency while each heavy request of issue 11's table runs.

    python -m bench.isolation [--pg-admin-dsn DSN] [--idle 3] [--repeat 1]

A real `sluice serve` (hypercorn, one worker) over a PostgreSQL database of its own
(bench/heavy.py's tables, created here and dropped afterwards). For each heavy request a
second client sends a cheap lookup (`GET /v1/databases/shop/tables/items`) back to back; its
p50/p99/max while the heavy request runs are reported next to the same client's figures on
the idle server, with the heavy request's own time and status. Written to
bench/results/isolation.md, with the machine's load average (other work on a shared machine
moves every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.heavy import PG_SETUP, heavy_requests
from bench.peer import free_port, wait_until_responds
from bench.results import latency_summary

RESULTS = Path(__file__).resolve().parent / "results" / "isolation.md"
PROBE = "/v1/databases/shop/tables/items"
# stalls of every other client measured when the issue was filed (idle machine, before)
BEFORE_S = {
    "200 KB nested-flow YAML run config": 2.8,
    "870 KB flat YAML run config": 3.4,
    "85 KB SQL IN list": 1.8,
    "dry run of a 2,000-step chain": 1.3,
    "518 KB merge made of a large CASE": 3.3,
    "simple query returning 1M rows": 2.5,
}


@contextmanager
def database(admin_dsn: str) -> Iterator[str]:
    name = f"sluice_bench_iso_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def setup(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for sql in PG_SETUP:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    try:
        asyncio.run(setup(dsn))
        yield dsn
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def config(dsn: str, data_dir: Path) -> dict[str, Any]:
    u = urlsplit(dsn)
    db = {
        "type": "postgresql",
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 5432,
        "database": u.path.lstrip("/"),
        "user": u.username or "postgres",
        "query_timeout_seconds": 120,
    }
    return {
        "databases": [{"name": "shop", **db}, {"name": "shop_slow", **db}],
        "permissions": {"default": {"shop": {"level": "R"}, "shop_slow": {"level": "R"}}},
        "safety": {"max_rows_per_query": 2_000_000, "inline_rows": 100},
        "server": {"data_dir": str(data_dir), "body_limit_bytes": 2_000_000},
    }


@contextmanager
def serve(dsn: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-iso-") as tmp:
        folder = Path(tmp)
        path = folder / "sluice.yaml"
        path.write_text(json.dumps(config(dsn, folder / "data")))
        port = free_port()
        log = (folder / "server.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice.cli",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_responds(f"{url}/v1/health", proc)
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/v1/databases/shop/tables/big", timeout=5).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("the databases were not discovered")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def probe(url: str, latencies: list[float], done: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        while not done.is_set():
            started = time.perf_counter()
            c.get(PROBE)
            latencies.append((time.perf_counter() - started) * 1000)


def idle(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    done = threading.Event()
    threading.Timer(seconds, done.set).start()
    probe(url, latencies, done)
    return latencies


def during(url: str, path: str, body: dict[str, Any]) -> tuple[list[float], float, str]:
    latencies: list[float] = []
    done = threading.Event()
    prober = threading.Thread(target=probe, args=(url, latencies, done))
    prober.start()
    time.sleep(0.3)
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post(path, json=body)
    took = time.perf_counter() - started
    status = str(r.status_code)
    if r.status_code >= 400:
        status += f" {r.json()['error']['code']}"
    done.set()
    prober.join()
    return latencies, took, status


def run(admin_dsn: str, idle_s: float, repeat: int) -> str:
    load_before = os.getloadavg()
    rows = []
    with database(admin_dsn) as dsn, serve(dsn) as url:
        base = latency_summary(_np(idle(url, idle_s)))
        for name, path, body in heavy_requests():
            for _ in range(repeat):
                lat, took, status = during(url, path, body)
                s = latency_summary(_np(lat))
                rows.append((name, status, took, s, max(lat) if lat else float("nan")))
    load_after = os.getloadavg()
    lines = [
        "# Another client's latency while each heavy request runs (issue 11)",
        "",
        "`python -m bench.isolation`: one hypercorn worker; a second client sends "
        f"`GET {PROBE}` back to back while each heavy request of the issue's table runs.",
        f"Idle server, same client: p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms.",
        f"Load average (1, 5, 15 min) before {_load(load_before)}, after {_load(load_after)} "
        f"on {os.cpu_count()} cores (a shared machine: other work moves every figure).",
        "",
        "| heavy request | status | its time (s) | other client p50 (ms) | p99 (ms) | max (ms) "
        "| max / idle p99 | stall before the fix (s, issue) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, status, took, s, worst in rows:
        ratio = worst / base["p99_ms"] if base["p99_ms"] else float("nan")
        lines.append(
            f"| {name} | {status} | {took:.2f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{worst:.0f} | {ratio:.1f}x | {BEFORE_S.get(name, float('nan')):g} |"
        )
    lines += [
        "",
        "The 2,000-step dry run and the 518 KB merge are refused by a bound before any work "
        "(`limits.max_steps`, `safety.max_query_chars`). The YAML configs are parsed in a child "
        "process: 422 when parsed (they are not federated queries), 400 "
        "`document_too_costly` when the parse passed `limits.parse_timeout_seconds` (5 s; "
        "on a loaded machine). The others run to completion.",
        "",
    ]
    return "\n".join(lines)


def _np(values: list[float]) -> Any:
    import numpy as np

    return np.array(values)


def _load(avg: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.1f}" for v in avg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle probing")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each heavy request")
    args = parser.parse_args()
    report = run(args.pg_admin_dsn, args.idle, args.repeat)
    RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
