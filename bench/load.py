"""A small HTTP load generator for any server speaking the query API.

    python -m bench.load --url http://127.0.0.1:8787/v1/query/simple --body '{...}' \
        --concurrency 32 --duration 10 [--processes 2]

On two cores the client must cost far less than the server it measures, so this is not
httpx: each connection is a keep-alive HTTP/1.1 stream (asyncio) that writes pre-encoded
requests and reads responses by Content-Length (or chunked), nothing more. Concurrency is
the number of connections, each with one request in flight; --processes spreads them over
several processes when one client process would saturate a core.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.results import latency_summary


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    def as_metrics(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"c={self.concurrency:<4} {self.req_per_s:9.1f} req/s  p50 {self.p50_ms:7.2f} ms"
            f"  p95 {self.p95_ms:7.2f}  p99 {self.p99_ms:7.2f}  n={self.requests}"
            f"  errors={self.errors}"
        )


def encode_requests(
    url: str, bodies: list[Any], headers: dict[str, str] | None = None
) -> list[bytes]:
    """Pre-encoded POST requests (GET when a body is None), one per body."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    out = []
    for body in bodies:
        if body is None:
            out.append(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
            continue
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{extra}\r\n"
        )
        out.append(head.encode() + payload)
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        return status, bytes(body), keep
    if length is None:
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep


async def _worker(
    host: str,
    port: int,
    requests: list[bytes],
    start_at: int,
    stop_at: float,
    warm_until: float,
    lat: list[int],
    statuses: dict[str, int],
    errors: list[str],
) -> None:
    reader = writer = None
    cycle = itertools.islice(itertools.cycle(requests), start_at, None)
    while (now := time.perf_counter()) < stop_at:
        req = next(cycle)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = time.perf_counter_ns()
            writer.write(req)
            status, _, keep = await _read_response(reader)  # type: ignore[arg-type]
            took = time.perf_counter_ns() - t0
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if now >= warm_until:
                errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if not keep:
            writer.close()
            reader = writer = None
        if now < warm_until:
            continue
        key = str(status)
        statuses[key] = statuses.get(key, 0) + 1
        if 200 <= status < 300:
            lat.append(took)
        elif len(errors) < 5:
            errors.append(f"HTTP {status}")
    if writer is not None:
        writer.close()


async def _drive(
    url: str,
    requests: list[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    offset: int,
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lat: list[int] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    begin = time.perf_counter()
    warm_until = begin + warmup_s
    stop_at = warm_until + duration_s
    await asyncio.gather(
        *(
            _worker(
                host, port, requests, offset + i * 7, stop_at, warm_until, lat, statuses, errors
            )
            for i in range(concurrency)
        )
    )
    return {"lat": np.asarray(lat, dtype=np.int64), "statuses": statuses, "errors": errors}


def _drive_in_process(args: tuple[Any, ...]) -> dict[str, Any]:
    return asyncio.run(_drive(*args))


def run_load(
    url: str,
    bodies: list[Any],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    processes: int = 1,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Drive `url` with `concurrency` keep-alive connections for `duration_s` seconds after
    `warmup_s`, cycling through `bodies`; blocking (call it from a thread in async code).
    Only 2xx responses count as requests; everything else is an error."""
    requests = encode_requests(url, bodies, headers)
    processes = max(1, min(processes, concurrency))
    shares = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    jobs = [
        (url, requests, share, duration_s, warmup_s, i * 1009) for i, share in enumerate(shares)
    ]
    if processes == 1:
        parts = [_drive_in_process(jobs[0])]
    else:
        # spawn, not fork: the caller may hold event loops, threads and sockets
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_drive_in_process, jobs)
    lat = np.concatenate([p["lat"] for p in parts]) / 1e6
    statuses: dict[str, int] = {}
    errors: list[str] = []
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        errors += p["errors"]
    ok = len(lat)
    failed = sum(v for k, v in statuses.items() if not k.startswith("2"))
    failed += sum(1 for e in errors if not e.startswith("HTTP"))

    return LoadResult(
        concurrency=concurrency,
        duration_s=duration_s,
        requests=ok,
        errors=failed,
        req_per_s=ok / duration_s,
        **latency_summary(lat),
        statuses=statuses,
        first_error=errors[0] if errors else None,
    )


async def arun_load(url: str, bodies: list[Any], **kwargs: Any) -> LoadResult:
    """run_load from async code, off the event loop."""
    return await asyncio.to_thread(run_load, url, bodies, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", help="JSON body (omit for GET)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    body = json.loads(args.body) if args.body else None
    for c in args.concurrency:
        print(
            run_load(
                args.url,
                [body],
                concurrency=c,
                duration_s=args.duration,
                warmup_s=args.warmup,
                processes=args.processes,
            )
        )


if __name__ == "__main__":
    main()
