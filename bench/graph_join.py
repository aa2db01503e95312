"""`graph_join`: a linked join of PostgreSQL parent rows into a FalkorDB graph, through sluice
and through the raw clients doing the same batched parameter queries, in one run.

    python -m bench.graph_join [--nodes 1000000] [--parents 100000] [--rounds 3]

The graph: `--nodes` :Customer nodes {id, segment} with an index on id. PostgreSQL:
`--parents` rows of distinct customer ids. Raw: asyncpg fetches the parents' ids, then the
falkordb async client runs `MATCH (c:Customer) WHERE c.id IN $ids RETURN c.id, c.segment` over
batches of `safety.max_link_values_per_batch` ids with `safety.link_batches_in_flight` in
flight (sluice's defaults), and DuckDB joins the two (what sluice's merge does). sluice: the
same join as one federated request in-process (safety pipeline, link batches, DuckDB sink and
merge). Rounds alternate raw and sluice; the best of each is reported, with the ratio.
Results: bench/results/graph_join.jsonl and bench/results/cypher.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import duckdb
import msgspec
import pyarrow as pa
from falkordb.asyncio import FalkorDB

from api.envelopes import QuerySuccess
from api.local import open_service
from bench.datasets import Targets
from bench.falkordb_server import falkordb_server
from bench.simple import load_avg
from engine.config import SafetyConfig, load_config_text
from engine.ir import FederatedQuery

RESULTS = Path(__file__).parent / "results"
GRAPH = "bench_customers"
TABLE = "bench_graph_parents"
CHILD = "MATCH (c:Customer) WHERE c.id IN $ids RETURN c.id AS customer_id, c.segment AS segment"


def load_graph(port: int, nodes: int) -> float:
    async def go() -> float:
        g = FalkorDB(host="127.0.0.1", port=port).select_graph(GRAPH)
        start = time.perf_counter()
        step = 100_000
        for lo in range(0, nodes, step):
            await g.query(
                "UNWIND range($lo, $hi) AS i CREATE (:Customer {id: i, segment: i % 17})",
                {"lo": lo + 1, "hi": min(lo + step, nodes)},
            )
        await g.query("CREATE INDEX FOR (c:Customer) ON (c.id)")
        # the index builds in the background: measure nothing until it serves queries
        while True:
            status = (await g.ro_query("CALL db.indexes()")).result_set[0][7]
            if status == "OPERATIONAL":
                break
            if time.perf_counter() - start > 600:
                raise RuntimeError(f"the Customer(id) index is still {status!r}")
            await asyncio.sleep(0.5)
        return time.perf_counter() - start

    return asyncio.run(go())


def load_parents(dsn: str, parents: int, nodes: int) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.execute(
                f"CREATE TABLE {TABLE} AS SELECT g AS id, "
                f"(g * 7919) % {nodes} + 1 AS customer_id, g % 100 AS amount "
                f"FROM generate_series(1, {parents}) g"
            )
            await conn.execute(f"ANALYZE {TABLE}")
        finally:
            await conn.close()

    asyncio.run(go())


async def raw_join(dsn: str, port: int, batch: int, in_flight: int) -> tuple[float, int]:
    start = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        parents = await conn.fetch(f"SELECT id, customer_id, amount FROM {TABLE}")
    finally:
        await conn.close()
    ids = sorted({r["customer_id"] for r in parents})
    g = FalkorDB(host="127.0.0.1", port=port, max_connections=in_flight).select_graph(GRAPH)
    limiter = anyio.Semaphore(in_flight)
    children: list[list[Any]] = []

    async def one(chunk: list[int]) -> None:
        async with limiter:
            result = await g.ro_query(CHILD, {"ids": chunk})
            children.extend(result.result_set)

    async with anyio.create_task_group() as tg:
        for lo in range(0, len(ids), batch):
            tg.start_soon(one, ids[lo : lo + batch])
    con = duckdb.connect()
    con.register(
        "p",
        pa.table(
            {
                "id": [r["id"] for r in parents],
                "customer_id": [r["customer_id"] for r in parents],
                "amount": [r["amount"] for r in parents],
            }
        ),
    )
    con.register(
        "c",
        pa.table({"customer_id": [r[0] for r in children], "segment": [r[1] for r in children]}),
    )
    rows = con.execute(
        "SELECT p.id, p.customer_id, c.segment FROM p JOIN c USING (customer_id)"
    ).fetchall()
    con.close()
    return time.perf_counter() - start, len(rows)


BODY = {
    "steps": [
        {"step_id": "p", "database": "pg", "table": TABLE,
         "query": f"SELECT id, customer_id, amount FROM {TABLE}"},
        {"step_id": "c", "database": "graph", "table": "Customer", "language": "cypher",
         "query": "MATCH (c:Customer) RETURN c.id AS customer_id, c.segment AS segment",
         "depends_on": ["p"], "link_from": "customer_id", "link_to": "customer_id"},
    ],
    "merge": "SELECT p.id, p.customer_id, c.segment FROM p JOIN c USING (customer_id)",
}  # fmt: skip


async def sluice_join(dsn: str, port: int, data_dir: str, cap: int) -> tuple[float, int]:
    config = load_config_text(f"""
databases:
  - {{name: pg, type: postgresql, dsn: "{dsn}"}}
  - {{name: graph, type: falkordb, host: 127.0.0.1, port: {port}, graph: {GRAPH}}}
safety:
  max_rows_per_query: {cap}
  query_timeout_seconds: 600
server:
  data_dir: "{data_dir}"
permissions:
  default:
    pg: {{level: R}}
    graph: {{level: R}}
""")
    async with open_service(config) as session:
        start = time.perf_counter()
        result = await session.federated(msgspec.convert(BODY, FederatedQuery))
        elapsed = time.perf_counter() - start
    assert isinstance(result, QuerySuccess), result
    return elapsed, result.data.row_count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_join")
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--parents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    safety = SafetyConfig()
    batch, in_flight = safety.max_link_values_per_batch, safety.link_batches_in_flight
    dsn = Targets().pg_admin_dsn
    load_parents(dsn, args.parents, args.nodes)
    raw_s: list[float] = []
    sluice_s: list[float] = []
    with tempfile.TemporaryDirectory() as work, falkordb_server(Path(work)) as port:
        load_s = load_graph(port, args.nodes)
        rows = 0
        for _ in range(args.rounds):
            t, raw_rows = asyncio.run(raw_join(dsn, port, batch, in_flight))
            raw_s.append(t)
            t, rows = asyncio.run(sluice_join(dsn, port, work, args.parents + 1))
            sluice_s.append(t)
            assert rows == raw_rows == args.parents, (rows, raw_rows)
    line = {
        "runner": "graph_join",
        "nodes": args.nodes,
        "parents": args.parents,
        "batch": batch,
        "in_flight": in_flight,
        "graph_load_s": round(load_s, 2),
        "raw_s": round(min(raw_s), 3),
        "sluice_s": round(min(sluice_s), 3),
        "vs_raw": round(min(sluice_s) / min(raw_s), 3),
        "rounds": {"raw": [round(x, 3) for x in raw_s], "sluice": [round(x, 3) for x in sluice_s]},
        "load_avg_1m": load_avg(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(line))
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "graph_join.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    (RESULTS / "cypher.md").write_text(
        "# Cypher: linked join PostgreSQL -> FalkorDB\n\n"
        f"`python -m bench.graph_join --nodes {args.nodes} --parents {args.parents}` "
        f"({line['at']}, load average {line['load_avg_1m']} on 2 cores)\n\n"
        "| graph nodes | parent rows | link batch | in flight | raw clients (s) | sluice (s) "
        "| sluice / raw |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {args.nodes:,} | {args.parents:,} | {batch:,} | {in_flight} | {line['raw_s']} "
        f"| {line['sluice_s']} | {line['vs_raw']} |\n\n"
        "Raw: asyncpg fetch of the parents, the same batched `IN $ids` queries through the "
        "falkordb async client with the same batches in flight, and a DuckDB join. sluice: one "
        "federated request in-process (safety, link batches, DuckDB sink and merge). Best of "
        f"{args.rounds} alternating rounds each: raw {line['rounds']['raw']}, sluice "
        f"{line['rounds']['sluice']}.\n"
    )


if __name__ == "__main__":
    main()
