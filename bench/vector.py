"""Vector search through sluice against each backend's own client, side by side in one run.

    python -m bench.vector [--n 1000000] [--qdrant-n 20000] [--queries 200] [--rounds 4]
        [--backends lancedb,pgvector,qdrant] [--carry lancedb] [--build-only]
        [--rewrite --note NOTE.md]

Data: `n` random unit vectors of 384 dimensions (numpy, seeded) with an int payload field,
built once per size under .cache/bench-vector/ (LanceDB IVF_FLAT and pgvector ivfflat with
sqrt(n) lists, probes 10 on every path; Qdrant's embedded local mode is exact and holds
`qdrant-n` points). Four sides run the same search with a fresh query vector per call, in
interleaved slices, at concurrency 1 and 8: the client in this process
(bench/vector_clients.py), sluice in this process (api.local), the thin HTTP service over
the client (bench/thin_vector.py: what HTTP costs) and `sluice serve` over HTTP. Then
near_text: the embedding time of new texts and of repeated ones, in process and end to end.

Writes bench/results/vector.md (figures, sizes, build times and the load average).
"""

# ruff: noqa: E501  (markdown table rows and request bodies read better on one line)
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.peer import free_port, wait_until_responds
from bench.results import latency_summary

DIM = 384
K = 10
PROBES = 10
QUERY_VECTORS = 8192
RESULTS = Path(__file__).parent / "results" / "vector.md"


CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-vector"


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for at in range(0, n, step):
        v = rng.standard_normal((min(step, n - at), DIM), dtype=np.float32)
        out[at : at + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def cached_vectors(n: int, seed: int) -> np.ndarray:
    """`unit_vectors`, kept under .cache/ (1M x 384 takes a minute to draw and normalise)."""
    path = CACHE / f"vectors-{n}-{seed}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    v = unit_vectors(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, v)
    return v


def built(folder: Path) -> float | None:
    """The build time of a dataset already built under .cache/ (its `built` marker)."""
    marker = folder / "built"
    return float(marker.read_text()) if marker.exists() else None


def mark_built(folder: Path, seconds: float) -> float:
    (folder / "built").write_text(f"{seconds:.1f}")
    return seconds


# -- building (each once per size; the result is kept under .cache/bench-vector) -------------


def build_lancedb(folder: Path, vectors: np.ndarray) -> float:
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfFlat

    if (took := built(folder)) is not None:
        return took
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    n = len(vectors)
    table = pa.table(
        {
            "id": pa.array(np.arange(1, n + 1), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(vectors)), DIM),
            "bucket": pa.array(np.arange(n) % 10, pa.int32()),
        }
    )
    db = lancedb.connect(str(folder / "db"))
    t = db.create_table("points", table, mode="overwrite")
    t.create_index("vector", config=IvfFlat(distance_type="cosine", num_partitions=lists(n)))
    return mark_built(folder, time.perf_counter() - t0)


def lists(n: int) -> int:
    return max(1, int(math.sqrt(n)))


def _vector_binary(v: np.ndarray) -> bytes:
    """pgvector's binary wire form: dimension, an unused int16, big-endian float4s."""
    return struct.pack(">HH", len(v), 0) + np.asarray(v, dtype=">f4").tobytes()


async def build_pgvector(folder: Path, host: str, vectors: np.ndarray) -> float:
    import asyncpg

    if (took := built(folder)) is not None:
        return took
    t0 = time.perf_counter()
    n = len(vectors)
    conn = await asyncpg.connect(host=host, user="postgres", database="postgres")
    try:
        await conn.execute(f"""
            CREATE EXTENSION IF NOT EXISTS vector;
            DROP TABLE IF EXISTS points;
            CREATE TABLE points (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL,
                bucket integer NOT NULL);
        """)
        # binary COPY: asyncpg has no codec for `vector`, so give it pgvector's wire form
        await conn.set_type_codec(
            "vector", schema="public", encoder=_vector_binary, decoder=bytes, format="binary"
        )
        step = 50_000
        for at in range(0, n, step):
            chunk = vectors[at : at + step]
            records = ((at + i + 1, v, (at + i) % 10) for i, v in enumerate(chunk))
            await conn.copy_records_to_table(
                "points", records=records, columns=["id", "embedding", "bucket"]
            )
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(
            f"CREATE INDEX ON points USING ivfflat (embedding vector_cosine_ops) "
            f"WITH (lists = {lists(n)})"
        )
        await conn.execute("VACUUM ANALYZE points")
    finally:
        await conn.close()
    return mark_built(folder, time.perf_counter() - t0)


def start_pgserver(folder: Path) -> Any:
    """pgserver's PostgreSQL on the cached data folder (kept between runs: stop, not delete)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    folder.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(str(folder / "pgdata"), cleanup_mode="stop")


def build_qdrant(folder: Path, vectors: np.ndarray) -> float:
    from qdrant_client import QdrantClient, models

    if (took := built(folder)) is not None:
        return took
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    client = QdrantClient(path=str(folder / "db"))
    try:
        client.create_collection(
            "points", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        # the local mode commits (and syncs) SQLite once per point: 11 ms a point here, days
        # for 1M. The bench's own copy needs no durability while it is built.
        storage = client._client.collections["points"].storage.storage  # type: ignore[attr-defined]
        storage.execute("PRAGMA synchronous = OFF")
        storage.execute("PRAGMA journal_mode = MEMORY")
        step = 10_000
        for at in range(0, len(vectors), step):
            chunk = np.asarray(vectors[at : at + step])
            client.upload_collection(
                "points",
                vectors=chunk,
                payload=[{"bucket": (at + i) % 10} for i in range(len(chunk))],
                ids=list(range(at + 1, at + len(chunk) + 1)),
            )
    finally:
        client.close()
    return mark_built(folder, time.perf_counter() - t0)


def build_all(n: int, qdrant_n: int, backends: list[str]) -> dict[str, float]:
    """Every backend's dataset of `n` points (Qdrant: `qdrant_n`), built once and cached."""
    vectors = cached_vectors(n, 1)
    out: dict[str, float] = {}
    if "lancedb" in backends:
        out["lancedb"] = build_lancedb(CACHE / f"lance-{n}", vectors)
        print(f"lancedb {n}: {out['lancedb']:.1f} s", flush=True)
    if "pgvector" in backends:
        folder = CACHE / f"pg-{n}"
        pg = start_pgserver(folder)
        try:
            out["pgvector"] = asyncio.run(build_pgvector(folder, str(folder / "pgdata"), vectors))
        finally:
            pg.cleanup()
        print(f"pgvector {n}: {out['pgvector']:.1f} s", flush=True)
    if "qdrant" in backends:
        qn = min(n, qdrant_n)
        out["qdrant"] = build_qdrant(CACHE / f"qdrant-{qn}", vectors[:qn])
        print(f"qdrant {qn}: {out['qdrant']:.1f} s", flush=True)
    return out


# -- measuring --------------------------------------------------------------------------------


async def drive(
    call: Callable[[int], Awaitable[Any]], queries: int, concurrency: int
) -> tuple[list[float], float]:
    """`queries` calls, `concurrency` at a time: their latencies (ms) and the wall time (s)."""
    latencies: list[float] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < queries:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def interleaved(
    calls: dict[str, Callable[[int], Awaitable[Any]]], queries: int, concurrency: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Each caller's `queries` in `rounds` slices taken in turn (client, thin, sluice, client,
    ...), so a change of the machine's load hits every side alike."""
    lat: dict[str, list[float]] = {k: [] for k in calls}
    wall = dict.fromkeys(calls, 0.0)
    per = max(1, queries // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            got, took = await drive(call, per, concurrency)
            lat[name] += got
            wall[name] += took
    return {k: {**latency_summary(np.array(lat[k])), "qps": len(lat[k]) / wall[k]} for k in calls}


def search_body(q: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"intent": "search", "vector": [float(x) for x in q], "limit": K, **extra}


def sluice_caller(
    client: httpx.AsyncClient, db: str, qs: np.ndarray, **extra: Any
) -> Callable[[int], Awaitable[Any]]:
    bodies = [
        json.dumps(
            {
                "database": db,
                "table": "points",
                "language": "vector",
                "query": json.dumps(search_body(q, **extra)),
            }  # fmt: skip
        ).encode()
        for q in qs
    ]
    headers = {"content-type": "application/json"}

    seq = itertools.count()

    async def call(i: int) -> Any:
        body = bodies[next(seq) % len(bodies)]
        r = await client.post("/v1/query/simple", content=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(r.text)
        rows = r.json()["data"]["rows"]
        assert len(rows) == K, rows
        return rows

    return call


def thin_caller(client: httpx.AsyncClient, qs: np.ndarray) -> Callable[[int], Awaitable[Any]]:
    bodies = [
        json.dumps({"vector": [float(x) for x in q], "limit": K, "probes": PROBES}).encode()
        for q in qs
    ]
    headers = {"content-type": "application/json"}

    seq = itertools.count()

    async def call(i: int) -> Any:
        r = await client.post("/search", content=bodies[next(seq) % len(bodies)], headers=headers)
        if r.status_code != 200:
            raise RuntimeError(r.text)
        rows = r.json()["rows"]
        assert len(rows) == K, rows
        return rows

    return call


def local_caller(session: Any, qs: np.ndarray) -> Callable[[int], Awaitable[Any]]:
    """sluice without HTTP: the same body through api.local (safety, engine, connector)."""
    texts = [json.dumps(search_body(q, probes=PROBES)) for q in qs]
    seq = itertools.count()

    async def call(i: int) -> Any:
        rows = await session.rows("vec", "points", texts[next(seq) % len(texts)])
        assert len(rows) == K, rows
        return rows

    return call


def client_caller(
    search: Callable[[np.ndarray, int, int], Awaitable[Any]], qs: np.ndarray
) -> Callable[[int], Awaitable[Any]]:
    seq = itertools.count()

    async def call(i: int) -> Any:
        rows = await search(qs[next(seq) % len(qs)], K, PROBES)
        assert len(rows) == K, rows
        return rows

    return call


def start_process(
    args: list[str], log: Path, health: str, cwd: Path, timeout: float = 600
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until_responds(health, proc, timeout)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        raise RuntimeError(f"{args[:3]} did not start: {log.read_text()[-3000:]}") from exc
    return proc


def sluice_config(backend: str, target: str) -> str:
    kind = {"lancedb": "lancedb", "pgvector": "pgvector", "qdrant": "qdrant"}[backend]
    where = (
        f"    host: {target}\n    user: postgres\n    database: postgres\n    pool_size: 8\n"
        if backend == "pgvector"
        else f"    path: {target}\n"
    )
    return (
        f"databases:\n  - name: vec\n    type: {kind}\n{where}"
        "permissions:\n  default:\n    vec:\n      level: R\n"
        "safety:\n  max_rows_per_query: 100\n  query_timeout_seconds: 60\n"
    )


def targets(backend: str, n: int, qdrant_n: int, work: Path) -> tuple[str, str, str, str]:
    """Where the client, the thin service and sluice find the data. Qdrant's local mode
    locks its folder to one process: each gets its own copy of the cached folder."""
    if backend == "lancedb":
        path = str(CACHE / f"lance-{n}" / "db")
        return path, path, path, path
    if backend == "pgvector":
        host = str(CACHE / f"pg-{n}" / "pgdata")
        return host, host, host, host
    src = CACHE / f"qdrant-{min(n, qdrant_n)}" / "db"
    copies = []
    for who in ("client", "thin", "sluice", "local"):
        shutil.copytree(src, work / f"qdrant-{who}")
        copies.append(str(work / f"qdrant-{who}"))
    return copies[0], copies[1], copies[2], copies[3]


async def measure_backend(
    backend: str, args: argparse.Namespace, qs: np.ndarray, work: Path
) -> dict[str, Any]:
    from api.local import open_service
    from bench.vector_clients import OPENERS
    from engine.config import load_config

    client_at, thin_at, sluice_at, local_at = targets(backend, args.n, args.qdrant_n, work)
    local_cfg = work / f"{backend}-local.yaml"
    local_cfg.write_text(sluice_config(backend, local_at))
    bin_dir = Path(sys.executable).parent
    cfg = work / f"{backend}.yaml"
    cfg.write_text(sluice_config(backend, sluice_at))
    thin_port, sluice_port = free_port(), free_port()
    procs = []
    search, close = await OPENERS[backend](client_at)
    out: dict[str, Any] = {}
    try:
        procs.append(start_process(
            [sys.executable, "-m", "bench.thin_vector", "--backend", backend, "--target", thin_at,
             "--port", str(thin_port)], work / f"thin-{backend}.log",
            f"http://127.0.0.1:{thin_port}/health", Path.cwd()))  # fmt: skip
        procs.append(start_process(
            [str(bin_dir / "sluice"), "serve", "--config", str(cfg), "--port", str(sluice_port)],
            work / f"sluice-{backend}.log", f"http://127.0.0.1:{sluice_port}/v1/health", work))  # fmt: skip
        limits = httpx.Limits(max_connections=16)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{thin_port}", timeout=120, limits=limits) as thin,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{sluice_port}", timeout=120, limits=limits) as sl,
            open_service(load_config(str(local_cfg))) as local,
        ):  # fmt: skip
            calls = {
                "client": client_caller(search, qs),
                "local": local_caller(local, qs),
                "thin": thin_caller(thin, qs),
                "sluice": sluice_caller(sl, "vec", qs, probes=PROBES),
            }
            for call in calls.values():  # warm: first open, caches, connections
                for i in range(8):
                    await call(i)
            for c in (1, 8):
                out[str(c)] = await interleaved(calls, args.queries, c, args.rounds)
                print(backend, c, {k: round(v["p50_ms"], 2) for k, v in out[str(c)].items()},
                      flush=True)  # fmt: skip
            if backend == args.near_text_on:
                out["near_text"] = await near_text(sl, "vec")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        await close()
    return out


async def measure(args: argparse.Namespace, builds: dict[str, float]) -> dict[str, Any]:
    backends = args.backends.split(",")
    # more query vectors than any side sends: no body repeats (sluice caches parses per text)
    qs = unit_vectors(QUERY_VECTORS, 2)
    out: dict[str, Any] = {"n": args.n, "qdrant_n": min(args.n, args.qdrant_n),
                           "queries": args.queries, "rounds": args.rounds, "builds": builds,
                           "cells": {}}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-vector-"))
    pg = start_pgserver(CACHE / f"pg-{args.n}") if "pgvector" in backends else None
    try:
        for backend in backends:
            out["cells"][backend] = await measure_backend(backend, args, qs, work)
            out["load_" + backend] = os.getloadavg()[0]
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return out


async def near_text(http: httpx.AsyncClient, db: str) -> dict[str, Any]:
    """Embedding cost in process (new texts, repeated texts) and a near_text vs a search with
    the same, precomputed vector, end to end."""
    from connectors.embedding import Embedder

    e = Embedder()
    e.embed(["load the model"])
    texts = [f"waterproof hiking boots number {i}" for i in range(50)]
    t0 = time.perf_counter()
    for t in texts:
        e.embed([t])
    new_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    t0 = time.perf_counter()
    for _ in range(20):
        for t in texts:
            e.embed([t])
    cached_us = (time.perf_counter() - t0) * 1e6 / (20 * len(texts))
    res: dict[str, Any] = {"embed_new_ms": new_ms, "embed_cached_us": cached_us}
    # near_text needs a 384-dimensional collection: the points are
    vec = e.embed(["trail shoes"])[0]
    near = {"database": db, "table": "points", "language": "vector",
            "query": json.dumps({"intent": "near_text", "text": "trail shoes", "limit": K, "probes": PROBES})}  # fmt: skip
    search = {"database": db, "table": "points", "language": "vector",
              "query": json.dumps(search_body(vec, probes=PROBES))}  # fmt: skip
    for body in (near, search):
        await http.post("/v1/query/simple", json=body)

    async def timed(body: dict[str, Any], n: int = 100) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            r = await http.post("/v1/query/simple", json=body)
            assert r.status_code == 200, r.text
        return (time.perf_counter() - t0) * 1000 / n

    res["near_text_repeat_ms"] = await timed(near)
    res["search_same_vector_ms"] = await timed(search)
    fresh = []
    for i in range(30):
        body = dict(near)
        body["query"] = json.dumps({"intent": "near_text", "text": f"shoes for trail {i}", "limit": K, "probes": PROBES})  # fmt: skip
        t0 = time.perf_counter()
        r = await http.post("/v1/query/simple", json=body)
        assert r.status_code == 200, r.text
        fresh.append((time.perf_counter() - t0) * 1000)
    res["near_text_new_text_ms"] = float(np.median(fresh))
    return res


def write_markdown(out: dict[str, Any], note: str) -> str:
    builds = out["builds"]
    lines = [
        "# Vector search: sluice vs each backend's own client",
        "",
        f"`python -m bench.vector` (bench/vector.py), run ending {out['when']}, "
        "on 2 cores that the bench process, both servers and the backend share (the load "
        "average below says what else ran): the ratios are side by "
        f"side in one run ({out['rounds']} interleaved slices per cell: client, in-process, "
        "thin, sluice, client, ...). Load average (1 min) after each backend: "
        + ", ".join(f"{b} {out['load_' + b]:.1f}" for b in out["cells"]) + ".",
        "",
        f"- Points: unit vectors of {DIM} dimensions (numpy, seeded), an int payload `bucket`; "
        f"LanceDB and pgvector **{out['n']:,}**, Qdrant **{out['qdrant_n']:,}**. Built once and "
        "kept under `.cache/bench-vector/` (" + ", ".join(f"{b} {t:.0f} s" for b, t in builds.items()) + ").",
        f"- Indexes: LanceDB IVF_FLAT and pgvector ivfflat, sqrt(n) = {lists(out['n'])} lists, "
        f"{PROBES} probes on every path; Qdrant's embedded local mode is exact (no index).",
        f"- Queries: {out['queries']} per cell and side, top {K}, each side a fresh query vector per "
        "call (no repeated body), "
        "returning id, score and `bucket`.",
        "- **client**: the backend's own client in the bench process (bench/vector_clients.py: "
        "LanceDB's async API; asyncpg with the `pgvector` package's binary codec, the probes "
        "as a connection setting and one `pool.fetch` per search; qdrant-client's local mode "
        "in a thread).",
        "- **in-process**: sluice without HTTP, in the bench process: the same body through "
        "`api.local` (`open_service(config).rows(...)`: safety pipeline, engine, connector), "
        "against the client in the same process: sluice's own share.",
        "- **thin**: the same client behind the thinnest HTTP service (bench/thin_vector.py: "
        "Starlette, hypercorn with 1 uvloop worker as `sluice serve`, msgspec JSON, no safety): "
        "what HTTP alone costs.",
        "- **sluice**: `POST /v1/query/simple` to `sluice serve` (1 worker) with `{\"intent\": "
        "\"search\", \"vector\": [384 floats], \"limit\": 10, \"probes\": 10}`: safety "
        "pipeline, engine, connector, JSON envelope.",
        "",
        "| backend | points | conc. | client p50 ms | in-process p50 ms | thin p50 ms | sluice p50 ms | in-process/client | sluice/thin | sluice/client | client q/s | in-process q/s | thin q/s | sluice q/s | target <= 1.3x (sluice/client) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    carried = out.get("carried", {})
    if carried:
        lines.insert(
            3,
            "Rows of "
            + ", ".join(f"**{b}** come from the run ending {w}" for b, w in carried.items())
            + " (not re-measured in this one; compare their ratios, not their times, with the rest).",
        )
    for b, cells in out["cells"].items():
        points = out["qdrant_n"] if b == "qdrant" else out["n"]
        for c in ("1", "8"):
            r = cells[c]
            cl, lo, th, sl = r["client"], r["local"], r["thin"], r["sluice"]
            ratio = sl["p50_ms"] / cl["p50_ms"]
            met = "met" if ratio <= 1.3 else "**missed**"
            lines.append(
                f"| {b} | {points:,} | {c} | {cl['p50_ms']:.2f} | {lo['p50_ms']:.2f} | "
                f"{th['p50_ms']:.2f} | {sl['p50_ms']:.2f} | {lo['p50_ms'] / cl['p50_ms']:.2f}x | "
                f"{sl['p50_ms'] / th['p50_ms']:.2f}x | {ratio:.2f}x | {cl['qps']:.0f} | "
                f"{lo['qps']:.0f} | {th['qps']:.0f} | {sl['qps']:.0f} | {met} |"
            )
    for b, cells in out["cells"].items():
        nt = cells.get("near_text")
        if not nt:
            continue
        lines += [
            "",
            f"## near_text (offline int8 all-MiniLM-L6-v2), on {b}",
            "",
            "| what | time |",
            "|---|---:|",
            f"| embed a new text, in process | {nt['embed_new_ms']:.1f} ms |",
            f"| embed a repeated text (cache hit), in process | {nt['embed_cached_us']:.1f} us |",
            f"| near_text with a new text, end to end | {nt['near_text_new_text_ms']:.1f} ms |",
            f"| near_text with a repeated text, end to end | {nt['near_text_repeat_ms']:.1f} ms |",
            f"| search with the same vector precomputed, end to end | {nt['search_same_vector_ms']:.1f} ms |",
        ]  # fmt: skip
    if note:
        lines += ["", note.strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--qdrant-n", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--near-text-on", default="lancedb")
    p.add_argument("--note", type=Path, help="a markdown file appended to the results")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--backends", default="lancedb,pgvector,qdrant")
    p.add_argument("--carry", default="", help="backends whose cells the last run keeps")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--build-only", action="store_true", help="build and cache the datasets")
    p.add_argument("--rewrite", action="store_true", help="re-render the last run's figures")
    args = p.parse_args(argv)
    last = CACHE / "last-run.json"
    if args.rewrite:  # the last run's figures again, e.g. with a new --note
        out = json.loads(last.read_text())
    else:
        builds = build_all(args.n, args.qdrant_n, args.backends.split(","))
        if args.build_only:
            return
        before = json.loads(last.read_text()) if args.carry and last.exists() else {}
        out = asyncio.run(measure(args, builds))
        out["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        out["carried"] = {}
        for b in filter(None, args.carry.split(",")):
            if b in before.get("cells", {}):
                out["cells"] = {b: before["cells"][b], **out["cells"]}
                out["load_" + b] = before["load_" + b]
                out["builds"].setdefault(b, before["builds"].get(b))
                out["carried"][b] = (
                    before["carried"].get(b, before["when"])
                    if before.get("carried")
                    else before["when"]
                )
        last.write_text(json.dumps(out))
    text = write_markdown(out, args.note.read_text() if args.note else "")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
