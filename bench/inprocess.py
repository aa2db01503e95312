"""One lookup's cost without an HTTP server: the ASGI app driven directly, in one process.

    python -m bench.inprocess sluice|thin [--n 20000] [--keys 100000] [--clients 1]
                              [--no-audit] [--no-gc] [--profile]

Drives sluice's app (bench/server.py's dashboard config) or the thin service's
(bench/thin_service.py) with `SELECT ... FROM users WHERE id = <n>` lookups over the
dashboard database (bench/dashboard.py), keys drawn from a working set, and prints the
latency percentiles and the process CPU per lookup. `--no-audit` makes the audit log's
record() a no-op and `--no-gc` turns the collector off after startup, to measure what each
adds to the tail (bench/results/dashboard.md, fourth pass); `--profile` prints cProfile's
top functions. Run each side in its own process, back to back: the figures are for
comparing sides in one session, not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvloop

from bench.dashboard import TARGETS, key_of, sluice_body_fmt
from bench.server import LOOKUP_MAX_ROWS, config_yaml

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]


async def _call(app: App, path: str, body: bytes) -> None:
    sent: list[Message] = []
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"),
                                     (b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"lookup failed: {sent}")


async def _lifespan(app: App) -> tuple[asyncio.Task[None], asyncio.Queue[Message]]:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {started}")
    return task, inbox


async def measure(app: App, path: str, fmt: str, args: argparse.Namespace) -> None:
    task, inbox = await _lifespan(app)
    await asyncio.sleep(1)  # the catalog's first discovery
    if args.no_gc:
        gc.disable()
    rnd = random.Random(1)
    latencies: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            body = (fmt % key_of(rnd.randrange(args.keys), args.keys)).encode()
            t0 = time.perf_counter()
            await _call(app, path, body)
            latencies.append(time.perf_counter() - t0)

    await client(300)  # connections, prepared statements, the template
    latencies.clear()
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    cpu0 = time.process_time()
    await asyncio.gather(*(client(args.n // args.clients) for _ in range(args.clients)))
    cpu = time.process_time() - cpu0
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    latencies.sort()

    def q(p: float) -> float:
        return latencies[int(p * (len(latencies) - 1))] * 1000

    print(
        f"{args.side}: p50 {q(0.5):.3f} ms, p99 {q(0.99):.3f} ms, p99.9 {q(0.999):.3f} ms, "
        f"max {latencies[-1] * 1000:.2f} ms; CPU {cpu / len(latencies) * 1e6:.0f} us per lookup"
    )
    await inbox.put({"type": "lifespan.shutdown"})
    await task


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.inprocess")
    p.add_argument("side", choices=("sluice", "thin"))
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--no-audit", action="store_true")
    p.add_argument("--no-gc", action="store_true")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    if args.side == "thin":
        import os

        from bench import thin_service

        os.environ["THIN_DSN"] = TARGETS.pg_dsn
        uvloop.run(measure(thin_service.create_app(), "/lookup", '{"id": %d}', args))
        return
    from api.app import create_app
    from engine.config import load_config
    from safety.audit import AuditLog

    if args.no_audit:
        AuditLog.record = lambda self, entry: None  # type: ignore[method-assign]
    folder = Path(tempfile.mkdtemp(prefix="sluice-inprocess-"))
    cfg = folder / "sluice.yaml"
    cfg.write_text(config_yaml(TARGETS, folder, max_rows=LOOKUP_MAX_ROWS, pg_only=True))
    uvloop.run(measure(create_app(load_config(cfg)), "/v1/query/simple", sluice_body_fmt(), args))


if __name__ == "__main__":
    main()
