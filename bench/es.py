"""`es`: Elasticsearch through sluice against the raw client, side by side in one run.

    python -m bench.es [--docs 1000000] [--parents 100000] [--repeat 3] [--duration 10]

1. Linked join: PostgreSQL parents (ids 0..parents-1) -> an index of `docs` documents
   (`pid` = i mod 2*parents, so each parent matches docs/(2*parents) documents), through a
   real `sluice serve` (`POST /v1/query`, the count and sum computed by the merge). The raw
   client reads the same parent ids with asyncpg and sends the same batched `terms` queries
   (max_link_values_per_batch ids each, link_batches_in_flight at once; each one search of up
   to 10,000 hits counting its matches, a scroll only when they do not fit, as sluice does;
   every response decoded with msgspec). `vs_raw` = sluice / raw.
2. The simple path for a `term` lookup at concurrency 32: `POST /v1/query/simple` against the
   same load generator (bench/load.py) posting the same term queries to `_search` directly.

Writes bench/results/es.md. The server is the test suite's Elasticsearch 7.9.2 (tests/
es_server.py) with a 1 GB heap; PostgreSQL is the local server (a database of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from bench.load import run_load
from tests import es_server
from tests.api.conftest import start_server, stop_server
from tests.servers import fresh_pg

INDEX = "bench_docs"
LINK_BATCH = 2_000
IN_FLIGHT = 3
PAGE = 10_000
RESULTS = Path(__file__).parent / "results" / "es.md"
_DECODE = msgspec.json.Decoder().decode


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def load_index(url: str, n_docs: int, n_parents: int) -> float:
    """`n_docs` documents {pid, k, v} (bulk, no refresh until the end, one segment)."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        c.delete(f"/{INDEX}")
        c.put(
            f"/{INDEX}",
            json={
                "settings": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "refresh_interval": "-1",
                },
                "mappings": {
                    "properties": {
                        "pid": {"type": "long"},
                        "k": {"type": "keyword"},
                        "v": {"type": "double"},
                    }
                },
            },
        ).raise_for_status()
        enc = msgspec.json.encode
        action = b'{"index":{}}\n'
        chunk = 20_000
        for at in range(0, n_docs, chunk):
            body = b"".join(
                action + enc({"pid": i % (2 * n_parents), "k": f"k{i}", "v": i * 0.5}) + b"\n"
                for i in range(at, min(n_docs, at + chunk))
            )
            r = c.post(
                f"/{INDEX}/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"}
            )
            r.raise_for_status()
            assert not r.json()["errors"]
        c.put(f"/{INDEX}/_settings", json={"index": {"refresh_interval": "1s"}})
        c.post(f"/{INDEX}/_refresh").raise_for_status()
        c.post(f"/{INDEX}/_forcemerge", params={"max_num_segments": 1}).raise_for_status()
        count = c.get(f"/{INDEX}/_count").json()["count"]
        assert count == n_docs, count
    return time.perf_counter() - t0


def config_text(es_url: str, pg_dsn: str) -> str:
    return json.dumps(
        {
            "databases": [
                {
                    "name": "es",
                    "type": "elasticsearch",
                    "dsn": es_url,
                    "pool_size": 32,
                    "query_timeout_seconds": 600,
                },
                {
                    "name": "pg",
                    "type": "postgresql",
                    "dsn": pg_dsn,
                    "pool_size": 8,
                    "query_timeout_seconds": 600,
                },
            ],
            "permissions": {"default": {"es": {"level": "R"}, "pg": {"level": "R"}}},
            "server": {"max_concurrent_queries_per_database": 64},
            "safety": {
                "max_rows_per_query": 20_000_000,
                "query_timeout_seconds": 600,
                "max_link_values_per_batch": LINK_BATCH,
                "link_batches_in_flight": IN_FLIGHT,
                "inline_rows": 100,
            },
        }
    )


JOIN_MERGE = "SELECT count(*) AS n, sum(c.v) AS s FROM p JOIN c ON c.pid = p.id"


def join_body() -> dict[str, Any]:
    child = {"query": {"match_all": {}}, "_source": ["pid", "v"]}
    return {
        "steps": [
            {
                "step_id": "p",
                "database": "pg",
                "table": "parents",
                "query": "SELECT id FROM parents",
            },
            {
                "step_id": "c",
                "database": "es",
                "table": INDEX,
                "language": "es_dsl",
                "query": json.dumps(child),
                "depends_on": ["p"],
                "link_from": "id",
                "link_to": "pid",
            },
        ],
        "merge": JOIN_MERGE,
    }


def sluice_join(base_url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = httpx.post(f"{base_url}/v1/query", json=join_body(), timeout=3600)
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"/v1/query answered {r.status_code}: {r.text[:500]}")
    row = r.json()["data"]["rows"][0]
    return elapsed, int(row["n"])


async def raw_join(es_url: str, pg_dsn: str) -> tuple[float, int]:
    """The same parent ids, the same batches of terms, the same scroll pages."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(pg_dsn)
    try:
        ids = sorted(r[0] for r in await conn.fetch("SELECT id FROM parents"))
    finally:
        await conn.close()
    batches = [ids[i : i + LINK_BATCH] for i in range(0, len(ids), LINK_BATCH)]
    slots = asyncio.Semaphore(IN_FLIGHT)
    total = 0
    enc = msgspec.json.encode
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=es_url, timeout=600, limits=httpx.Limits(max_connections=32)
    ) as c:

        async def one(batch: list[int]) -> None:
            nonlocal total
            async with slots:
                query = {"bool": {"filter": [{"terms": {"pid": batch}}]}}
                body = {
                    "query": query,
                    "_source": ["pid", "v"],
                    "size": PAGE,
                    "track_total_hits": True,
                }
                r = await c.post(f"/{INDEX}/_search", content=enc(body), headers=headers)
                res = _DECODE(r.content)
                hits = res["hits"]["hits"]
                if res["hits"]["total"]["value"] <= len(hits):
                    total += len(hits)
                    return
                # more than one page: the same scroll sluice falls back to
                body = {**body, "sort": ["_doc"]}
                body.pop("track_total_hits")
                r = await c.post(
                    f"/{INDEX}/_search",
                    params={"scroll": "60s"},
                    content=enc(body),
                    headers=headers,
                )
                res = _DECODE(r.content)
                sid = res.get("_scroll_id")
                while True:
                    hits = res["hits"]["hits"]
                    total += len(hits)
                    if len(hits) < PAGE:
                        break
                    r = await c.post(
                        "/_search/scroll",
                        headers=headers,
                        content=enc({"scroll": "60s", "scroll_id": sid}),
                    )
                    res = _DECODE(r.content)
                    sid = res.get("_scroll_id", sid)
                await c.request(
                    "DELETE", "/_search/scroll", headers=headers, content=enc({"scroll_id": [sid]})
                )

        await asyncio.gather(*(one(b) for b in batches))
    return time.perf_counter() - t0, total


def lookups(n_docs: int, n: int = 1_000) -> list[dict[str, Any]]:
    step = max(1, n_docs // n)
    return [{"query": {"term": {"k": f"k{i * step}"}}} for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.es")
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--parents", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    lines = [
        "# Elasticsearch (es_dsl) vs the raw client\n",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores shared with other work; Elasticsearch 7.9.2 OSS, 1 GB heap, "
        f"one shard.\n",
    ]
    server = es_server.start(heap_mb=1024)
    try:
        load_s = load_index(server.url, args.docs, args.parents)
        print(f"loaded {args.docs:,} documents in {load_s:.1f}s", flush=True)
        with fresh_pg() as pg:
            pg.run(
                "CREATE TABLE parents (id bigint PRIMARY KEY)",
                f"INSERT INTO parents SELECT g FROM generate_series(0, {args.parents - 1}) g",
                "ANALYZE parents",
            )
            folder = Path(tempfile.mkdtemp(prefix="sluice-bench-es-"))
            srv = start_server(config_text(server.url, pg.dsn), folder)
            try:
                expected = args.docs // (2 * args.parents) * args.parents
                sluice_join(srv.url)  # warm-up: pools, mapping cache, DuckDB
                asyncio.run(raw_join(server.url, pg.dsn))
                s_times, r_times = [], []
                for _ in range(args.repeat):
                    rs, rn = asyncio.run(raw_join(server.url, pg.dsn))
                    ss, sn = sluice_join(srv.url)
                    assert rn == sn == expected, (rn, sn, expected)
                    r_times.append(rs)
                    s_times.append(ss)
                    print(f"join: raw {rs:.2f}s sluice {ss:.2f}s (load {load_avg()})", flush=True)
                raw_s, sl_s = statistics.median(r_times), statistics.median(s_times)
                lines += [
                    "## Linked join\n",
                    f"{args.parents:,} PostgreSQL parent rows -> an index of {args.docs:,} "
                    f"documents, {expected:,} matching documents fetched, batches of "
                    f"{LINK_BATCH:,} terms, {IN_FLIGHT} in flight; median of {args.repeat} "
                    "alternating runs.\n",
                    "| runner | seconds | runs |",
                    "|---|---|---|",
                    f"| raw (httpx + msgspec, the same batched requests) | {raw_s:.2f} | "
                    f"{', '.join(f'{t:.2f}' for t in r_times)} |",
                    f"| sluice (`POST /v1/query`, merge in DuckDB) | {sl_s:.2f} | "
                    f"{', '.join(f'{t:.2f}' for t in s_times)} |",
                    f"\n`vs_raw` = **{sl_s / raw_s:.2f}x** (target <= 1.5x); load average "
                    f"{load_avg()}.\n",
                ]
                # the simple path
                bodies_sluice = [
                    {"database": "es", "table": INDEX, "language": "es_dsl", "query": json.dumps(b)}
                    for b in lookups(args.docs)
                ]
                bodies_raw = lookups(args.docs)
                got = httpx.post(f"{srv.url}/v1/query/simple", json=bodies_sluice[0]).json()
                assert got["data"]["row_count"] == 1, got
                run_load(
                    f"{srv.url}/v1/query/simple",
                    bodies_sluice,
                    concurrency=8,
                    duration_s=3.0,
                    warmup_s=0.0,
                )
                raw_res = run_load(
                    f"{server.url}/{INDEX}/_search",
                    bodies_raw,
                    concurrency=args.concurrency,
                    duration_s=args.duration,
                )
                sl_res = run_load(
                    f"{srv.url}/v1/query/simple",
                    bodies_sluice,
                    concurrency=args.concurrency,
                    duration_s=args.duration,
                )
                print(f"lookup raw {raw_res}\nlookup sluice {sl_res}", flush=True)
                lines += [
                    f"## `term` lookup, concurrency {args.concurrency}\n",
                    f"1,000 distinct `term` queries on `k` (one hit each), {args.duration:g} s "
                    "each, the same load generator (bench/load.py).\n",
                    "| runner | req/s | p50 ms | p99 ms |",
                    "|---|---|---|---|",
                    f"| raw (`POST /{INDEX}/_search`) | {raw_res.req_per_s:.0f} | "
                    f"{raw_res.p50_ms:.2f} | {raw_res.p99_ms:.2f} |",
                    f"| sluice (`POST /v1/query/simple`, one hypercorn worker) | "
                    f"{sl_res.req_per_s:.0f} | {sl_res.p50_ms:.2f} | {sl_res.p99_ms:.2f} |",
                    f"\nsluice / raw = **{sl_res.req_per_s / raw_res.req_per_s:.2f}**; load "
                    f"average {load_avg()}.\n",
                ]
            finally:
                stop_server(srv)
    finally:
        es_server.stop(server)
    RESULTS.write_text("\n".join(lines))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
