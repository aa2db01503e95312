"""The reference product (PyPI `faz-core`) on the same data, driven by the same loader and
bodies as sluice.

    python -m bench.peer [--concurrency 1 8 32 128] [--duration 10] [--join 1000 10000 100000]

It lives in its own virtualenv, bench/.peer/, created on first use and never a dependency
of sluice. Configuration, as its installed package reads it: a YAML file named by the
FAZ_CONFIG environment variable with `databases` (name, type, host, port, database,
username, password), `permissions` (per database a baseline `access` level, optional
per-table overrides) and `safety` (max_rows_per_query, which it injects as a LIMIT and
which defaults to 1000, and query_timeout_seconds). It is started as `faz serve --port P`
(uvicorn, one process) and ready once GET /v1/health answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import bodies, datagen, results
from bench.datasets import Targets
from bench.load import LoadResult, run_load

PEER_DIR = Path(__file__).resolve().parent / ".peer"
PEER_PACKAGE = "faz-core"
RUNNER = "peer"


def ensure_installed(venv: Path = PEER_DIR) -> Path:
    """The peer's `faz` executable, installing it into its own virtualenv if missing."""
    exe = venv / "bin" / "faz"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", PEER_PACKAGE], check=True)
    return exe


def peer_version(venv: Path = PEER_DIR) -> str | None:
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"from importlib.metadata import version; print(version({PEER_PACKAGE!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def config_yaml(targets: Targets, *, max_rows: int = 10_000_000, timeout_s: int = 600) -> str:
    """faz.yaml for the benchmark databases, read-only, with a row cap above any workload
    (its default cap of 1000 would truncate the joins)."""
    pg_host, pg_port = _pg_host_port(targets.pg_admin_dsn)
    config = {
        "databases": [
            {
                "name": bodies.PG_NAME,
                "type": "postgresql",
                "host": pg_host,
                "port": pg_port,
                "database": targets.pg_database,
                "username": _pg_user(targets.pg_admin_dsn),
                "password": "",
            },
            {
                "name": bodies.MYSQL_NAME,
                "type": "mysql",
                "host": targets.mysql_host,
                "port": targets.mysql_port,
                "database": targets.mysql_database,
                "username": targets.mysql_user,
                "password": targets.mysql_password,
            },
        ],
        "permissions": [
            {"database": bodies.PG_NAME, "access": "R"},
            {"database": bodies.MYSQL_NAME, "access": "R"},
        ],
        "safety": {"max_rows_per_query": max_rows, "query_timeout_seconds": timeout_s},
    }
    # JSON is valid YAML, and needs no YAML library on our side
    return json.dumps(config, indent=2) + "\n"


def _pg_host_port(dsn: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    u = urlsplit(dsn)
    return u.hostname or "127.0.0.1", u.port or 5432


def _pg_user(dsn: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(dsn).username or "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_responds(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


@dataclass(frozen=True)
class RunningPeer:
    base_url: str
    workdir: Path
    log_path: Path


@contextlib.contextmanager
def serve(targets: Targets = Targets(), *, port: int | None = None) -> Iterator[RunningPeer]:
    """`faz serve` on a free loopback port over the benchmark databases; stopped on exit."""
    exe = ensure_installed()
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        cfg = work / "faz.yaml"
        cfg.write_text(config_yaml(targets))
        log_path = work / "server.log"
        env = {
            **os.environ,
            "FAZ_CONFIG": str(cfg),
            "FAZ_LOG_LEVEL": "WARNING",
            "FAZ_AUDIT_LOG": str(work / "audit.jsonl"),
        }
        env.pop("VIRTUAL_ENV", None)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(exe), "serve", "--port", str(port)],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_responds(f"{base}/v1/health", proc)
            yield RunningPeer(base, work, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def check(
    base_url: str, path: str, body: dict[str, Any], timeout_s: float = 600.0
) -> dict[str, Any]:
    """One request; raises with the server's envelope unless it answered 200."""
    resp = httpx.post(f"{base_url}{path}", json=body, timeout=timeout_s)
    if resp.status_code != 200:
        raise RuntimeError(f"{path} answered {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def simple_lookup(
    base_url: str, n_users: int, concurrency: int, duration_s: float, processes: int = 1
) -> LoadResult:
    """POST /v1/query/simple primary-key lookups at a concurrency (any server of the API)."""
    lookups = bodies.lookup_bodies(n_users)
    got = check(base_url, "/v1/query/simple", lookups[0])
    if got["data"]["row_count"] != 1:
        raise RuntimeError(f"lookup returned {got['data']['row_count']} rows, expected 1")
    return run_load(
        f"{base_url}/v1/query/simple",
        lookups,
        concurrency=concurrency,
        duration_s=duration_s,
        processes=processes,
    )


def timed_query(base_url: str, body: dict[str, Any], repeat: int = 3) -> dict[str, Any]:
    """POST /v1/query `repeat` times; the best wall time, all of them, and the rows."""
    times = []
    got: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = check(base_url, "/v1/query", body)
        times.append(time.perf_counter() - t0)
    rows = got["data"]["rows"]
    return {
        "seconds": min(times),
        "all_seconds": times,
        "rows": rows,
        "events_joined": sum(int(r["events"]) for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32, 128])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--join", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--orders-db",
        default=bodies.MYSQL_NAME,
        help="where the linked orders step runs (mysql or postgresql)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=10_000_000,
        help="the dataset loaded (python -m bench.datasets --scale N)",
    )
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    spec = datagen.spec_for(args.scale, args.events)
    version = {"faz-core": peer_version()}
    with serve() as peer:
        print(f"peer {version['faz-core']} at {peer.base_url}")
        for c in args.concurrency:
            res = simple_lookup(peer.base_url, spec.users, c, args.duration, args.processes)
            print(res)
            if not args.no_record:
                results.record(
                    RUNNER,
                    results.ONE_ROW_LOOKUP,
                    res.as_metrics(),
                    params={"concurrency": c},
                    extra_versions=version,
                )
        for n in args.join:
            forms = {
                "linked": bodies.join_body(n, orders_db=args.orders_db),
                "range": bodies.join_range_body(
                    n, datagen.last_order_of(spec, n), orders_db=args.orders_db
                ),
            }
            for form, body in forms.items():
                label = f"join n={n} ({form}, orders in {args.orders_db})"
                try:
                    res = timed_query(peer.base_url, body, repeat=3 if n <= 10_000 else 1)
                except (RuntimeError, httpx.HTTPError) as exc:
                    print(f"{label}: FAILED {str(exc)[:300]}")
                    metrics: dict[str, Any] = {"failed": str(exc)[:1000]}
                else:
                    print(f"{label}: {res['seconds']:.3f}s ({res['events_joined']} events joined)")
                    metrics = {k: v for k, v in res.items() if k != "rows"}
                if not args.no_record:
                    results.record(
                        RUNNER,
                        results.LINKED_JOIN,
                        metrics,
                        params={"n_events": n, "form": form, "orders_db": args.orders_db},
                        extra_versions=version,
                    )


if __name__ == "__main__":
    main()
