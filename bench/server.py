"""A real `sluice serve` process over the benchmark databases, and its memory.

    with serve(server="granian", workers=1) as s:   # s.base_url, s.pid
        ...
        s.tree_rss_bytes()                          # RSS of the server and its workers

The config is generated (bench/.sluice-<port>/sluice.yaml): both databases read-only (R) for
the default principal, a row cap high enough for the largest join, few inline rows (the
result is stored, not returned), and no tokens (loopback only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import bodies
from bench.datasets import Targets
from bench.peer import free_port, wait_until_responds

SERVERS = ("hypercorn", "uvicorn", "granian")
JOIN_MAX_ROWS = 20_000_000  # above the largest join (10M events)
LOOKUP_MAX_ROWS = 10_000  # sluice's default: a dashboard server's config
INLINE_ROWS = 100
QUERY_TIMEOUT_S = 600


def config_yaml(
    targets: Targets,
    data_dir: Path,
    *,
    pool_size: int = 32,
    max_rows: int = JOIN_MAX_ROWS,
    pg_only: bool = False,
    limits: Mapping[str, object] | None = None,
) -> str:
    """sluice.yaml for the benchmark databases (JSON is valid YAML). Each database's
    query_timeout_seconds equals the safety one, as with the defaults: a step whose timeout
    differs from its connection's default pays one more round trip to set it."""
    pg = targets.pg_admin_dsn.rsplit("/", 1)[0]
    from urllib.parse import urlsplit

    u = urlsplit(pg)
    config = {
        "databases": [
            {
                "name": bodies.PG_NAME,
                "type": "postgresql",
                "host": u.hostname or "127.0.0.1",
                "port": u.port or 5432,
                "database": targets.pg_database,
                "user": u.username or "postgres",
                "pool_size": pool_size,
                "query_timeout_seconds": QUERY_TIMEOUT_S,
            },
            {
                "name": bodies.MYSQL_NAME,
                "type": "mysql",
                "host": targets.mysql_host,
                "port": targets.mysql_port,
                "database": targets.mysql_database,
                "user": targets.mysql_user,
                "password": targets.mysql_password,
                "pool_size": 8,
                "query_timeout_seconds": QUERY_TIMEOUT_S,
            },
        ],
        "permissions": {
            "default": {bodies.PG_NAME: {"level": "R"}, bodies.MYSQL_NAME: {"level": "R"}}
        },
        "safety": {
            "max_rows_per_query": max_rows,
            "inline_rows": INLINE_ROWS,
            "query_timeout_seconds": QUERY_TIMEOUT_S,
        },
        "server": {
            "data_dir": str(data_dir),
            "max_concurrent_queries_per_database": 64,
            "body_limit_bytes": 1_048_576,
        },
    }
    if limits:
        config["limits"] = dict(limits)
    if pg_only:
        config["databases"] = config["databases"][:1]
        config["permissions"] = {"default": {bodies.PG_NAME: {"level": "R"}}}
    return json.dumps(config, indent=2) + "\n"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_tree(pid: int) -> list[int]:
    """pid and every descendant (Linux /proc)."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen += [c for c in _children(seen[i]) if c not in seen]
        i += 1
    return seen


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by pid and its live descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


@dataclass
class RssSampler:
    """Samples the summed RSS of a process tree every `every_s` in a thread; `peak` is the
    highest sum seen (VmHWM is per process and for its whole life, so it cannot tell one
    request's peak from the previous one's)."""

    pid: int
    every_s: float = 0.02
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> int:
        total = sum(_status_kb(p, "VmRSS") for p in process_tree(self.pid)) * 1024
        self.peak = max(self.peak, total)
        return total

    def __enter__(self) -> RssSampler:
        self.peak = 0
        self.sample()

        def loop() -> None:
            while not self._stop.wait(self.every_s):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@dataclass(frozen=True)
class RunningSluice:
    base_url: str
    pid: int
    server: str
    workers: int
    config_path: Path
    log_path: Path

    def tree_rss_bytes(self) -> int:
        return sum(_status_kb(p, "VmRSS") for p in process_tree(self.pid)) * 1024

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def tree_hwm_bytes(self) -> int:
        return sum(_status_kb(p, "VmHWM") for p in process_tree(self.pid)) * 1024

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (the main one when it has no children)."""
        tree = process_tree(self.pid)
        return [p for p in tree if not _children(p)] or [self.pid]


@contextlib.contextmanager
def serve(
    targets: Targets = Targets(),
    *,
    server: str = "hypercorn",
    workers: int = 1,
    port: int | None = None,
    pool_size: int = 32,
    max_rows: int = JOIN_MAX_ROWS,
    pg_only: bool = False,
    gc_log: Path | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    limits: Mapping[str, object] | None = None,
) -> Iterator[RunningSluice]:
    """`sluice serve` as a subprocess on a free loopback port; stopped on exit. `gc_log`:
    run it under bench/gc_probe.py, which writes its garbage collections' pauses there."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")
    port = port or free_port()
    exe = Path(sys.executable).with_name("sluice")
    work = Path(tempfile.mkdtemp(prefix="bench-sluice-"))
    cfg = work / "sluice.yaml"
    # a pool per worker process: keep the total under PostgreSQL's 100 connections
    cfg.write_text(
        config_yaml(
            targets,
            work / "data",
            pool_size=max(4, pool_size // workers),
            max_rows=max_rows,
            pg_only=pg_only,
            limits=limits,
        )
    )
    log_path = work / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    command = [str(exe)]
    if gc_log is not None:
        here = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), here) if p)
        command = [sys.executable, "-m", "bench.gc_probe", str(gc_log)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *command,
                "serve",
                "--config",
                str(cfg),
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--server",
                server,
                *extra_args,
            ],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_responds(f"{base}/v1/health", proc)
            _wait_databases(base, 1 if pg_only else 2)
        except Exception as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sluice serve ({server}) did not start: {exc}\n{tail}") from exc
        yield RunningSluice(base, proc.pid, server, workers, cfg, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(proc.pid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _wait_databases(base: str, count: int = 2, timeout_s: float = 30.0) -> None:
    """Health answers before discovery ends; wait until `count` databases are connected."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = httpx.get(f"{base}/v1/health", timeout=2.0).json()
        if got.get("databases_connected", 0) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{base}: databases not connected within {timeout_s}s")
