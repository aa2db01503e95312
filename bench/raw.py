"""Baselines straight through the drivers: what sluice's overhead is measured against.

    python -m bench.raw lookup [--concurrency 1 8 32 128] [--duration 10]
    python -m bench.raw join [--n 10000 100000 1000000]

- simple_direct: the primary-key lookup through an asyncpg pool at a concurrency.
- fetch_events: n events rows through asyncpg `fetch` and through ADBC (Arrow).
- fetch_orders: the orders rows for a key set through asyncmy, in batched IN lists with a
  few batches in flight: the raw drivers' time for the linked step's rows.
- duckdb_join: the merge computed in DuckDB over the fetched Arrow tables.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import asyncmy
import asyncpg
import duckdb
import numpy as np
import pyarrow as pa

from bench import bodies, datagen, results
from bench.datasets import Targets

RUNNER = "raw"
KEYS_PER_BATCH = 2000
BATCHES_IN_FLIGHT = 3
MAX_POOL = 64  # PostgreSQL allows 100 connections; leave room for everyone else


@dataclass(frozen=True)
class LatencyStats:
    concurrency: int
    pool_size: int
    duration_s: float
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    def __str__(self) -> str:
        return (
            f"c={self.concurrency:<4} {self.req_per_s:9.1f} req/s  p50 {self.p50_ms:7.2f} ms"
            f"  p95 {self.p95_ms:7.2f}  p99 {self.p99_ms:7.2f}  n={self.requests}"
            f"  errors={self.errors}"
        )


async def simple_direct(
    concurrency: int,
    duration_s: float,
    *,
    targets: Targets = Targets(),
    n_users: int | None = None,
    warmup_s: float = 1.0,
    sql: str = bodies.LOOKUP_SQL,
) -> LatencyStats:
    """`sql` (default `SELECT * FROM users WHERE id = $1`) through an asyncpg pool by
    `concurrency` tasks, a random key each."""
    pool_size = min(concurrency, MAX_POOL)
    pool = await asyncpg.create_pool(targets.pg_dsn, min_size=pool_size, max_size=pool_size)
    try:
        if n_users is None:
            n_users = int(await pool.fetchval("SELECT max(id) FROM users"))
        lat: list[int] = []
        errors = 0
        loop = asyncio.get_running_loop()
        warm_until = loop.time() + warmup_s
        stop_at = warm_until + duration_s

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while (now := loop.time()) < stop_at:
                key = rng.randint(1, n_users)
                t0 = time.perf_counter_ns()
                try:
                    row = await pool.fetchrow(sql, key)
                except (asyncpg.PostgresError, OSError):
                    errors += now >= warm_until
                    continue
                took = time.perf_counter_ns() - t0
                if now >= warm_until:
                    if row is None:
                        errors += 1
                    else:
                        lat.append(took)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await pool.close()
    ms = np.asarray(lat, dtype=np.float64) / 1e6
    ok = len(ms)

    return LatencyStats(
        concurrency=concurrency,
        pool_size=pool_size,
        duration_s=duration_s,
        requests=ok,
        errors=errors,
        req_per_s=ok / duration_s,
        **results.latency_summary(ms),
    )


@dataclass(frozen=True)
class EventsFetch:
    n: int
    rows: int
    asyncpg_s: float
    adbc_s: float
    table: pa.Table  # the ADBC result, for the join


async def fetch_events(n: int, *, targets: Targets = Targets()) -> EventsFetch:
    """The first n events (id, order_id, amount) through asyncpg `fetch` and through ADBC."""
    conn = await asyncpg.connect(targets.pg_dsn)
    try:
        await conn.fetch(bodies.EVENTS_SQL, 1)  # prepare once, as a pooled server would
        t0 = time.perf_counter()
        records = await conn.fetch(bodies.EVENTS_SQL, n)
        asyncpg_s = time.perf_counter() - t0
    finally:
        await conn.close()
    rows = len(records)
    del records

    def via_adbc() -> tuple[float, pa.Table]:
        with adbc.connect(targets.pg_dsn) as aconn, aconn.cursor() as cur:
            t0 = time.perf_counter()
            cur.execute(bodies.EVENTS_SQL, (n,))
            table = cur.fetch_arrow_table()
            return time.perf_counter() - t0, table

    adbc_s, table = await asyncio.to_thread(via_adbc)
    return EventsFetch(n=n, rows=rows, asyncpg_s=asyncpg_s, adbc_s=adbc_s, table=table)


@dataclass(frozen=True)
class OrdersFetch:
    keys: int
    rows: int
    seconds: float
    table: pa.Table


async def fetch_orders(
    keys: list[int],
    *,
    targets: Targets = Targets(),
    per_batch: int = KEYS_PER_BATCH,
    in_flight: int = BATCHES_IN_FLIGHT,
) -> OrdersFetch:
    """`SELECT id, status FROM orders WHERE id IN (...)` through asyncmy, `per_batch` keys
    per statement, `in_flight` statements at once (one connection each)."""
    keys = sorted(set(keys))
    batches = [keys[i : i + per_batch] for i in range(0, len(keys), per_batch)]
    conns = [
        await asyncmy.connect(**targets.mysql_kwargs(targets.mysql_database))
        for _ in range(min(in_flight, max(1, len(batches))))
    ]
    ids: list[int] = []
    statuses: list[str] = []
    queue = list(reversed(batches))
    try:
        t0 = time.perf_counter()

        async def drain(conn: Any) -> None:
            async with conn.cursor() as cur:
                while queue:
                    batch = queue.pop()
                    marks = ", ".join(["%s"] * len(batch))
                    await cur.execute(f"{bodies.ORDERS_SQL} WHERE id IN ({marks})", batch)
                    for oid, status in await cur.fetchall():
                        ids.append(oid)
                        statuses.append(status)

        await asyncio.gather(*(drain(c) for c in conns))
        seconds = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    table = pa.table({"id": pa.array(ids, pa.int64()), "status": pa.array(statuses, pa.string())})
    return OrdersFetch(keys=len(keys), rows=len(ids), seconds=seconds, table=table)


def duckdb_join(events: pa.Table, orders: pa.Table) -> tuple[float, list[tuple[Any, ...]]]:
    """The merge over the two Arrow tables in an in-memory DuckDB; seconds and rows."""
    con = duckdb.connect()
    try:
        t0 = time.perf_counter()
        con.register("s0", events)
        con.register("s1", orders)
        rows = con.sql(bodies.JOIN_MERGE_SQL).fetchall()
        return time.perf_counter() - t0, rows
    finally:
        con.close()


async def linked_join(n: int, *, targets: Targets = Targets()) -> dict[str, Any]:
    """The raw drivers' time for the linked join's rows: events by ADBC, their orders by
    asyncmy, merge in DuckDB, done one after another (no overlap)."""
    ev = await fetch_events(n, targets=targets)
    keys = np.unique(ev.table.column("order_id").to_numpy()).tolist()
    od = await fetch_orders(keys, targets=targets)
    merge_s, rows = await asyncio.to_thread(duckdb_join, ev.table, od.table)
    return {
        "n_events": n,
        "rows": ev.rows,
        "order_keys": od.keys,
        "orders_rows": od.rows,
        "events_asyncpg_s": ev.asyncpg_s,
        "events_adbc_s": ev.adbc_s,
        "orders_asyncmy_s": od.seconds,
        "merge_duckdb_s": merge_s,
        "total_s": ev.adbc_s + od.seconds + merge_s,
        "events_joined": sum(int(r[1]) for r in rows),
    }


async def _main(args: argparse.Namespace) -> None:
    spec = datagen.spec_for(args.scale, args.events)
    if args.what in ("lookup", "all"):
        for c in args.concurrency:
            stats = await simple_direct(c, args.duration, n_users=spec.users)
            print(stats)
            if not args.no_record:
                results.record(
                    RUNNER, results.ONE_ROW_LOOKUP, asdict(stats), params={"concurrency": c}
                )
    if args.what in ("join", "all"):
        for n in args.n:
            got = await linked_join(n)
            print(
                f"n={n}: events asyncpg {got['events_asyncpg_s']:.3f}s adbc"
                f" {got['events_adbc_s']:.3f}s; {got['order_keys']} orders asyncmy"
                f" {got['orders_asyncmy_s']:.3f}s; duckdb merge {got['merge_duckdb_s']:.3f}s;"
                f" total {got['total_s']:.3f}s"
            )
            if not args.no_record:
                results.record(RUNNER, results.LINKED_JOIN, got, params={"n_events": n})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("what", choices=["lookup", "join", "all"], nargs="?", default="all")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32, 128])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--n", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--scale", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--no-record", action="store_true")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
