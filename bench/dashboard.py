"""`dashboard`: the one-row lookup a dashboard sends, every request a new literal, driven by
wrk (C, so the client barely takes the server's CPU) against sluice and against the thinnest
service on the same server kind and worker count (bench/thin_service.py), interleaved.

    python -m bench.dashboard [--servers hypercorn:1 granian:2] [--concurrency 1 8 32 128]
        [--keys 1 1000 100000] [--duration 5] [--profile DIR]

The query is `SELECT id, name, email, country FROM users WHERE id = <n>` (the bench users
table has country where a dashboard table would have plan), n drawn uniformly by wrk's Lua
script from a working set of `keys` distinct ids, so with 100,000 keys almost every request
carries a literal sluice has not seen. The dataset is its own PostgreSQL database
(`sluice_dash`: 100,000 users), loaded by bench/datasets.py on first use. Direct asyncpg
(a Python client, one process) is measured in the same run for reference.

Each (server, keys, concurrency) point runs sluice and the thin service in alternating short
rounds (`--rounds`, splitting `--duration` seconds per side), and records the 1-minute load
average: 2 cores are shared with the databases, wrk and
anything else running, so only ratios from the same run mean much. --profile records a
py-spy flame graph (and raw samples) of the sluice worker under wrk load at c=32 with the
largest working set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import bodies, datagen, results
from bench.datasets import Targets, load
from bench.peer import free_port
from bench.raw import simple_direct
from bench.server import LOOKUP_MAX_ROWS, process_tree, serve, tree_cpu_seconds

RUNNER = "dashboard"
DATABASE = "sluice_dash"
N_USERS = 100_000
SQL_TEMPLATE = "SELECT id, name, email, country FROM users WHERE id = {}"
TARGETS = Targets(pg_database=DATABASE)
OUT_MD = results.RESULTS_DIR / "dashboard.md"


@dataclass(frozen=True)
class Point:
    service: str  # sluice | thin
    server: str
    workers: int
    keys: int
    concurrency: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_us_per_req: float  # the server's own CPU (process tree), steadier than req/s here
    load_avg_1m: float


def ensure_dataset() -> None:
    """100,000 users in their own database (orders and events are not used: 10 events)."""
    spec = datagen.spec_for(N_USERS * 100, events=10)
    asyncio.run(load(spec, TARGETS, only=("pg",)))


def key_of(k: int, keys: int) -> int:
    """The k-th id of a working set of `keys` ids spread over the table."""
    return 1 + (k * max(1, N_USERS // keys)) % N_USERS


def lua_script(body_fmt: str, keys: int, path: str) -> str:
    """wrk script: POST `body_fmt % id` with id drawn from the working set; `done` prints
    one JSON line with the latency percentiles (microseconds) and the error counts."""
    step = max(1, N_USERS // keys)
    fmt = json.dumps(body_fmt)  # a valid Lua string literal too
    return f"""
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
local fmt = {fmt}
local keys, step, users = {keys}, {step}, {N_USERS}
function setup(thread) thread:set("seed", math.random(1, 2^30)) end
function init(args) math.randomseed(seed or os.time()) end
function request()
  local id = 1 + (math.random(0, keys - 1) * step) % users
  return wrk.format(nil, nil, nil, string.format(fmt, id))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {{"requests": %d, "duration_us": %d, "p50": %d, "p99": %d, "max": %d, ' ..
    '"status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def run_wrk(base: str, path: str, body_fmt: str, keys: int, c: int, duration_s: float) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua_script(body_fmt, keys, path))
    try:
        out = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{c}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                base,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            check=True,
            timeout=duration_s + 30,
        ).stdout
    finally:
        os.unlink(f.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    errors = sum(got[k] for k in ("status", "connect", "read", "write", "timeout"))
    return {
        "ok": got["requests"] - got["status"],
        "req_per_s": round((got["requests"] - got["status"]) / (got["duration_us"] / 1e6), 1),
        "p50_ms": got["p50"] / 1000,
        "p99_ms": got["p99"] / 1000,
        "max_ms": got["max"] / 1000,
        "errors": errors,
    }


@contextlib.contextmanager
def thin(server: str, workers: int, dsn: str = TARGETS.pg_dsn) -> Iterator[tuple[str, int]]:
    """bench/thin_service.py on a free port; its base URL and pid."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="thin-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.thin_service",
            "--dsn",
            dsn,
            "--port",
            str(port),
            "--server",
            server,
            "--workers",
            str(workers),
            "--pool",
            str(max(4, 32 // workers)),
        ],  # fmt: skip
        cwd=Path(__file__).resolve().parent.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"thin service exited: {Path(log.name).read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.post(f"{base}/lookup", json={"id": 1}, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("thin service did not answer within 30 s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(proc.pid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            proc.wait()
        log.close()
        os.unlink(log.name)


def sluice_body_fmt() -> str:
    body = {
        "database": bodies.PG_NAME,
        "table": "users",
        "language": "sql",
        "query": SQL_TEMPLATE.format("%d"),
    }
    return json.dumps(body)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def profile(pid: int, out_dir: Path, run: Any) -> None:
    """py-spy on `pid` while `run()` drives load: a flame graph and the raw collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(out_dir / f"sluice.{ext}"),
                "--duration",
                "8",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg"))
    ]
    time.sleep(0.5)
    run()
    for p in procs:
        p.wait(timeout=60)


def measure(
    servers: list[tuple[str, int]],
    concurrencies: list[int],
    key_sets: list[int],
    duration_s: float,
    profile_dir: Path | None = None,
    before: str | None = None,
    gc_dir: Path | None = None,
    profile_c: int = 32,
    rounds_per_point: int = 3,
) -> list[Point]:
    """Each point: sluice, then (with `before`, a PYTHONPATH holding an older checkout)
    the older sluice, then the thin service, back to back on the same server kind."""
    points: list[Point] = []
    sluice_fmt = sluice_body_fmt()
    thin_fmt = '{"id": %d}'
    for server, workers in servers:
        gc_log = None
        if gc_dir is not None and server == "hypercorn" and workers == 1:
            gc_dir.mkdir(parents=True, exist_ok=True)
            gc_log = gc_dir / "sluice.json"
        opts: dict[str, Any] = {"server": server, "workers": workers}
        opts |= {"max_rows": LOOKUP_MAX_ROWS, "pg_only": True}
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(serve(TARGETS, **opts, gc_log=gc_log))
            sides = {"sluice": (s.base_url, "/v1/query/simple", sluice_fmt, s.pid)}
            if before is not None:
                old_log = None if gc_log is None else gc_dir / "before.json"  # type: ignore[operator]
                env = {"PYTHONPATH": before}
                old = stack.enter_context(serve(TARGETS, **opts, gc_log=old_log, extra_env=env))
                sides["before"] = (old.base_url, "/v1/query/simple", sluice_fmt, old.pid)
            thin_base, thin_pid = stack.enter_context(thin(server, workers))
            sides["thin"] = (thin_base, "/lookup", thin_fmt, thin_pid)
            for base, path, fmt, _ in sides.values():  # connections, prepared statements
                run_wrk(base, path, fmt, 1, 8, 1.0)
            for keys in key_sets:
                for c in concurrencies:
                    rounds: dict[str, list[tuple[dict[str, Any], float]]] = {k: [] for k in sides}
                    # short rounds, alternating sides: a burst of load from elsewhere on
                    # the machine lands on both instead of on one side's whole point
                    for _ in range(rounds_per_point):
                        for service, (base, path, fmt, pid) in sides.items():
                            cpu0 = tree_cpu_seconds(pid)
                            got = run_wrk(base, path, fmt, keys, c, duration_s / rounds_per_point)
                            rounds[service].append((got, tree_cpu_seconds(pid) - cpu0))
                    for service, got_rounds in rounds.items():
                        p = Point(service, server, workers, keys, c, **_combine(got_rounds))
                        print(json.dumps(asdict(p)), flush=True)
                        points.append(p)
            if profile_dir is not None:
                pid = s.worker_pids()[0]
                most = max(key_sets)
                url = s.base_url
                profile(
                    pid,
                    profile_dir / f"{server}x{workers}",
                    functools.partial(
                        run_wrk, url, "/v1/query/simple", sluice_fmt, most, profile_c, 8.0
                    ),
                )
    return points


def _combine(rounds: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """One point from its rounds: requests and CPU summed over them, the median of their
    p50 and p99, the largest max."""
    ok = sum(got["ok"] for got, _ in rounds)
    seconds = sum(got["ok"] / got["req_per_s"] for got, _ in rounds if got["req_per_s"])
    return {
        "req_per_s": round(ok / seconds, 1) if seconds else 0.0,
        "p50_ms": statistics.median(got["p50_ms"] for got, _ in rounds),
        "p99_ms": statistics.median(got["p99_ms"] for got, _ in rounds),
        "max_ms": max(got["max_ms"] for got, _ in rounds),
        "errors": sum(got["errors"] for got, _ in rounds),
        "cpu_us_per_req": round(sum(cpu for _, cpu in rounds) / max(1, ok) * 1e6, 1),
        "load_avg_1m": load_avg(),
    }


def direct(concurrencies: list[int], duration_s: float) -> dict[int, dict[str, float]]:
    out = {}
    for c in concurrencies:
        st = asyncio.run(
            simple_direct(
                c,
                duration_s,
                targets=TARGETS,
                n_users=N_USERS,
                sql=SQL_TEMPLATE.format("$1"),
            )
        )
        out[c] = {"req_per_s": st.req_per_s, "p50_ms": st.p50_ms, "p99_ms": st.p99_ms}
        print(json.dumps({"service": "asyncpg", "concurrency": c, **out[c]}), flush=True)
    return out


def table(points: list[Point], raw: dict[int, dict[str, float]]) -> str:
    """Markdown: one row per (server, keys, concurrency), sluice next to the thin service
    (and the older sluice, when measured)."""
    by = {(p.service, p.server, p.workers, p.keys, p.concurrency): p for p in points}
    has_before = any(p.service == "before" for p in points)
    head = "| server | keys | c | sluice req/s | thin req/s | ratio | sluice p50 / p99 ms "
    head += "| thin p50 / p99 ms | +p50 ms | CPU us/req sluice / thin |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if has_before:
        head += " before req/s | before p50 / p99 ms | before ratio | before CPU us/req |"
        rule += "---:|---:|---:|---:|"
    lines = [head + " asyncpg req/s | load |", rule + "---:|---:|"]
    for p in points:
        if p.service != "sluice":
            continue
        point = (p.server, p.workers, p.keys, p.concurrency)
        t = by[("thin", *point)]
        ratio = p.req_per_s / t.req_per_s if t.req_per_s else 0.0
        row = (
            f"| {p.server} x{p.workers} | {p.keys:,} | {p.concurrency} | {p.req_per_s:,.0f} "
            f"| {t.req_per_s:,.0f} | **{ratio:.2f}x** | {p.p50_ms:.2f} / {p.p99_ms:.2f} "
            f"| {t.p50_ms:.2f} / {t.p99_ms:.2f} | {p.p50_ms - t.p50_ms:+.2f} "
            f"| {p.cpu_us_per_req:,.0f} / {t.cpu_us_per_req:,.0f} |"
        )
        b = by.get(("before", *point))
        if has_before and b is not None:
            b_ratio = b.req_per_s / t.req_per_s if t.req_per_s else 0.0
            row += f" {b.req_per_s:,.0f} | {b.p50_ms:.2f} / {b.p99_ms:.2f} | {b_ratio:.2f}x "
            row += f"| {b.cpu_us_per_req:,.0f} |"
        elif has_before:
            row += " | | | |"
        direct_rps = raw.get(p.concurrency, {}).get("req_per_s")
        row += f" {'' if direct_rps is None else f'{direct_rps:,.0f}'} | {p.load_avg_1m:.1f} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard")
    ap.add_argument("--servers", nargs="+", default=["hypercorn:1", "uvicorn:2", "granian:2"])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--keys", type=int, nargs="+", default=[1, 1000, 100_000])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per side and point")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per point")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--profile-concurrency", type=int, default=32)
    ap.add_argument("--before", default=None, help="PYTHONPATH of an older sluice to compare")
    ap.add_argument("--gc", type=Path, default=None, help="time GC pauses (hypercorn x1) here")
    ap.add_argument("--no-direct", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT_MD)
    ap.add_argument("--label", default="", help="a heading for this run in --out")
    args = ap.parse_args(argv)
    ensure_dataset()
    servers = [(s.split(":")[0], int(s.split(":")[1]) if ":" in s else 1) for s in args.servers]
    raw = {} if args.no_direct else direct(args.concurrency, args.duration)
    points = measure(
        servers,
        args.concurrency,
        args.keys,
        args.duration,
        args.profile,
        before=args.before,
        gc_dir=args.gc,
        profile_c=args.profile_concurrency,
        rounds_per_point=args.rounds,
    )
    with (results.RESULTS_DIR / f"{RUNNER}.jsonl").open("a") as f:
        for p in points:
            rec = {**asdict(p), "git": results.git_sha(), "versions": results.versions()}
            rec["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    text = table(points, raw)
    print(text)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with args.out.open("a") as f:
        f.write(f"\n## {args.label or 'run'} ({when}, git {(results.git_sha() or '?')[:10]})\n\n")
        f.write(
            f"{args.duration:g} s per side and point in {args.rounds} alternating rounds; "
            f"wrk -t1.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
