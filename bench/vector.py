"""Vector search through sluice against each backend's own client, side by side in one run.

    python -m bench.vector --n 200000 --queries 200 [--backends lancedb,pgvector,qdrant]

Data: `n` random unit vectors of 384 dimensions (numpy, seeded) with an int payload field.
Each backend gets the same points and an index (LanceDB IVF_FLAT and pgvector ivfflat with
sqrt(n) lists, probes 10 on both paths; Qdrant's embedded local mode is exact). The same
query vectors run through `sluice serve` (HTTP, `/v1/query/simple`, the vector language:
safety pipeline, JSON in and out) and through the client in this process (LanceDB async
API, asyncpg with the same SQL sluice sends, qdrant-client), at concurrency 1 and 8. Then
near_text: the embedding time of new texts and of repeated ones, in process and end to end.

Writes bench/results/vector.md (figures, sizes, build times and the load average).
"""

# ruff: noqa: E501  (markdown table rows and request bodies read better on one line)
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
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
RESULTS = Path(__file__).parent / "results" / "vector.md"


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for at in range(0, n, step):
        v = rng.standard_normal((min(step, n - at), DIM), dtype=np.float32)
        out[at : at + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


# -- building ---------------------------------------------------------------------------------


def build_lancedb(folder: Path, vectors: np.ndarray) -> float:
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfFlat

    t0 = time.perf_counter()
    n = len(vectors)
    table = pa.table(
        {
            "id": pa.array(np.arange(1, n + 1), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            "bucket": pa.array(np.arange(n) % 10, pa.int32()),
        }
    )
    db = lancedb.connect(str(folder))
    t = db.create_table("points", table, mode="overwrite")
    t.create_index("vector", config=IvfFlat(distance_type="cosine", num_partitions=lists(n)))
    return time.perf_counter() - t0


def lists(n: int) -> int:
    return max(1, int(math.sqrt(n)))


async def build_pgvector(host: str, vectors: np.ndarray) -> float:
    import asyncpg

    t0 = time.perf_counter()
    n = len(vectors)
    conn = await asyncpg.connect(host=host, user="postgres", database="postgres")
    try:
        await conn.execute(f"""
            CREATE EXTENSION IF NOT EXISTS vector;
            DROP TABLE IF EXISTS points;
            CREATE UNLOGGED TABLE points (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL,
                bucket integer NOT NULL);
        """)
        step = 50_000
        for at in range(0, n, step):
            chunk = vectors[at : at + step]
            records = (
                (at + i + 1, "[" + ",".join(f"{x:.7g}" for x in v) + "]", (at + i) % 10)
                for i, v in enumerate(chunk)
            )
            # COPY in binary has no codec for `vector`: stage the text form, cast in SQL
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS staging (id bigint, v text, b int)")
            await conn.copy_records_to_table("staging", records=records, columns=["id", "v", "b"])
            await conn.execute(
                "INSERT INTO points SELECT id, v::vector, b FROM staging; TRUNCATE staging"
            )
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute(
            f"CREATE INDEX ON points USING ivfflat (embedding vector_cosine_ops) "
            f"WITH (lists = {lists(n)})"
        )
        await conn.execute("ANALYZE points")
    finally:
        await conn.close()
    return time.perf_counter() - t0


def build_qdrant(path: Path, vectors: np.ndarray) -> float:
    from qdrant_client import QdrantClient, models

    t0 = time.perf_counter()
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(
            "points", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        step = 10_000
        for at in range(0, len(vectors), step):
            chunk = vectors[at : at + step]
            client.upload_collection(
                "points",
                vectors=chunk,
                payload=[{"bucket": (at + i) % 10} for i in range(len(chunk))],
                ids=list(range(at + 1, at + len(chunk) + 1)),
            )
    finally:
        client.close()
    return time.perf_counter() - t0


# -- measuring --------------------------------------------------------------------------------


async def drive(
    call: Callable[[int], Awaitable[Any]], queries: int, concurrency: int
) -> dict[str, float]:
    """`queries` calls, `concurrency` at a time: latency percentiles and queries/s."""
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
    wall = time.perf_counter() - t0
    return {**latency_summary(np.array(latencies)), "qps": queries / wall}


def search_body(q: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"intent": "search", "vector": [float(x) for x in q], "limit": K, **extra}


async def sluice_caller(
    client: httpx.AsyncClient, db: str, table: str, qs: np.ndarray, **extra: Any
) -> Callable[[int], Awaitable[Any]]:
    bodies = [
        {
            "database": db,
            "table": table,
            "language": "vector",
            "query": json.dumps(search_body(q, **extra)),
        }
        for q in qs
    ]

    async def call(i: int) -> Any:
        r = await client.post("/v1/query/simple", json=bodies[i % len(bodies)])
        if r.status_code != 200:
            raise RuntimeError(r.text)
        rows = r.json()["data"]["rows"]
        assert len(rows) == K, rows
        return rows

    return call


def start_sluice(work: Path, config: str) -> tuple[subprocess.Popen[bytes], str]:
    cfg = work / "sluice.yaml"
    cfg.write_text(config)
    port = free_port()
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("sluice")),
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(port),
        ],  # fmt: skip
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_responds(f"{base}/v1/health", proc, 180)
    deadline = time.monotonic() + 300
    want = config.count("- name:")
    while time.monotonic() < deadline:
        if httpx.get(f"{base}/v1/health").json().get("databases_connected") == want:
            return proc, base
        time.sleep(0.5)
    raise RuntimeError((work / "server.log").read_text()[-3000:])


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-vector-"))
    backends = args.backends.split(",")
    out: dict[str, Any] = {"n": args.n, "queries": args.queries, "builds": {}, "rows": []}
    t0 = time.perf_counter()
    vectors = unit_vectors(args.n, 1)
    qs = unit_vectors(64, 2)
    out["generate_s"] = time.perf_counter() - t0
    dbs: list[str] = []
    pg = None
    if "lancedb" in backends:
        (work / "lance").mkdir()
        out["builds"]["lancedb"] = build_lancedb(work / "lance", vectors)
        dbs.append(f"  - name: lance\n    type: lancedb\n    path: {work / 'lance'}\n")
    if "pgvector" in backends:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        pg = pgserver.get_server(str(work / "pg"), cleanup_mode="delete")
        out["builds"]["pgvector"] = await build_pgvector(str(work / "pg"), vectors)
        dbs.append(
            f"  - name: pgv\n    type: pgvector\n    host: {work / 'pg'}\n    user: postgres\n"
            "    database: postgres\n    pool_size: 8\n"
        )
    if "qdrant" in backends:
        qn = min(args.n, args.qdrant_n)
        out["builds"]["qdrant"] = build_qdrant(work / "qdrant", vectors[:qn])
        out["qdrant_n"] = qn
        # the embedded store is one process's: measure the client before sluice opens it
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(work / "qdrant"))

        async def q_call(i: int) -> Any:
            q = qs[i % len(qs)].tolist()
            return await asyncio.to_thread(lambda: client.query_points("points", query=q, limit=K))

        for c in (1, 8):
            out["rows"].append(("qdrant", "client", c, await drive(q_call, args.queries, c)))
        client.close()
        dbs.append(f"  - name: qdr\n    type: qdrant\n    path: {work / 'qdrant'}\n")
    config = "databases:\n" + "".join(dbs) + "permissions:\n  default:\n"
    for name in ("lance", "pgv", "qdr"):
        config += f"    {name}:\n      level: R\n"
    config += "safety:\n  max_rows_per_query: 100\n  query_timeout_seconds: 60\n"
    proc, base = start_sluice(work, config)
    try:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            if "lancedb" in backends:
                import lancedb

                db = await lancedb.connect_async(str(work / "lance"))
                table = await db.open_table("points")

                async def l_call(i: int) -> Any:
                    q = qs[i % len(qs)]
                    query = table.query().nearest_to(q).distance_type("cosine").nprobes(PROBES)
                    return await query.limit(K).select(["id", "bucket"]).to_arrow()

                s_call = await sluice_caller(http, "lance", "points", qs, probes=PROBES)
                await _pair(out, "lancedb", l_call, s_call, args.queries)
            if "pgvector" in backends:
                import asyncpg

                pool = await asyncpg.create_pool(
                    host=str(work / "pg"),
                    user="postgres",
                    database="postgres",
                    min_size=8,
                    max_size=8,  # fmt: skip
                )
                sql = (
                    "SELECT id, 1 - (embedding <=> ($1::text)::vector) AS score, bucket FROM points "
                    f"ORDER BY embedding <=> ($1::text)::vector LIMIT {K}"
                )
                texts = ["[" + ",".join(repr(float(x)) for x in q) + "]" for q in qs]

                async def p_call(i: int) -> Any:
                    async with pool.acquire() as conn, conn.transaction(readonly=True):
                        await conn.execute(f"SET LOCAL ivfflat.probes = {PROBES}")
                        return await conn.fetch(sql, texts[i % len(texts)])

                s_call = await sluice_caller(http, "pgv", "points", qs, probes=PROBES)
                await _pair(out, "pgvector", p_call, s_call, args.queries)
                await pool.close()
            if "qdrant" in backends:
                s_call = await sluice_caller(http, "qdr", "points", qs)
                await s_call(0)
                for c in (1, 8):
                    out["rows"].append(
                        ("qdrant", "sluice", c, await drive(s_call, args.queries, c))
                    )
            out["near_text"] = await near_text(http, backends)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return out


async def _pair(
    out: dict[str, Any],
    backend: str,
    client_call: Callable[[int], Awaitable[Any]],
    sluice_call: Callable[[int], Awaitable[Any]],
    queries: int,
) -> None:
    for call in (client_call, sluice_call):  # warm: first open, caches, connections
        for i in range(8):
            await call(i)
    for c in (1, 8):
        out["rows"].append((backend, "client", c, await drive(client_call, queries, c)))
        out["rows"].append((backend, "sluice", c, await drive(sluice_call, queries, c)))


async def near_text(http: httpx.AsyncClient, backends: list[str]) -> dict[str, Any]:
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
    db = "lance" if "lancedb" in backends else ("pgv" if "pgvector" in backends else "qdr")
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
    res["database"] = db
    return res


def write_markdown(out: dict[str, Any], load: tuple[float, float, float]) -> str:
    lines = [
        "# Vector search: sluice vs each backend's own client",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on 2 shared cores.",
        f"Points: {out['n']:,} unit vectors of {DIM} dimensions (numpy, seeded; generated in "
        f"{out['generate_s']:.1f} s); Qdrant: {out.get('qdrant_n', 0):,} of them (its embedded "
        "local mode keeps every point in Python objects and searches by brute force).",
        f"Queries: {out['queries']} per cell, top {K}, 64 distinct query vectors; LanceDB and "
        f"pgvector with an IVF index of sqrt(n) lists, {PROBES} probes on both paths.",
        "sluice = `POST /v1/query/simple` to `sluice serve` (hypercorn, 1 worker) over loopback, "
        "the body `{\"intent\": \"search\", \"vector\": [...384 floats], \"limit\": 10}`; "
        "client = the same search through the backend's client in the bench process.",
        "",
        "Build: " + ", ".join(f"{k} {v:.1f} s" for k, v in out["builds"].items()),
        "",
        "| backend | concurrency | client p50 ms | sluice p50 ms | ratio p50 | client q/s | sluice q/s | ratio q/s | target <= 1.3x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    rows = {(b, who, c): r for b, who, c, r in out["rows"]}
    for b in dict.fromkeys(b for b, _, _, _ in out["rows"]):
        for c in (1, 8):
            cl, sl = rows.get((b, "client", c)), rows.get((b, "sluice", c))
            if cl is None or sl is None:
                continue
            ratio = sl["p50_ms"] / cl["p50_ms"]
            qratio = cl["qps"] / sl["qps"]
            met = "met" if max(ratio, qratio) <= 1.3 else "**missed**"
            lines.append(
                f"| {b} | {c} | {cl['p50_ms']:.2f} | {sl['p50_ms']:.2f} | {ratio:.2f}x | "
                f"{cl['qps']:.0f} | {sl['qps']:.0f} | {qratio:.2f}x | {met} |"
            )
    nt = out.get("near_text")
    if nt:
        lines += [
            "",
            "## near_text (offline int8 all-MiniLM-L6-v2)",
            "",
            "| what | time |",
            "|---|---:|",
            f"| embed a new text, in process | {nt['embed_new_ms']:.1f} ms |",
            f"| embed a repeated text (cache hit), in process | {nt['embed_cached_us']:.1f} us |",
            f"| near_text with a new text, end to end ({nt['database']}) | {nt['near_text_new_text_ms']:.1f} ms |",
            f"| near_text with a repeated text, end to end | {nt['near_text_repeat_ms']:.1f} ms |",
            f"| search with the same vector precomputed, end to end | {nt['search_same_vector_ms']:.1f} ms |",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--qdrant-n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--backends", default="lancedb,pgvector,qdrant")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    out = asyncio.run(measure(args))
    text = write_markdown(out, os.getloadavg())
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
