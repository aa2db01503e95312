"""Page latency of a stored result: the local-disk store against the shared S3 store.

    python -m bench.shared_store [--rows 200000] [--samples 150] [--size 100]

One result (`--rows` rows of an id, a number and 48 random hex characters: a ~10 MB Parquet
file, larger than the in-memory copy either store keeps) is stored in a DiskResultStore and
in an ObjectResultStore on a SeaweedFS started here (tests/s3_server.py) with its index in a
PostgreSQL database of its own (created here, dropped after). Then random pages are read
from each, interleaved sample by sample so both see the same machine load:

- disk: the local Parquet file, only the row groups of the page;
- s3, footer cached: the index row (PostgreSQL) + a HEAD + the page's row groups (ranged
  GET), as a process that already paged the result;
- s3, first page: the same plus the footer, as a process paging it for the first time.

The bytes fetched per page are counted apart, through a proxy in front of SeaweedFS, next to
the object's size. Written to bench/results/shared_store.md with the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pyarrow as pa

from engine.config import ResultsConfig
from engine.object_results import ObjectResultStore, filesystem
from engine.results import DiskResultStore, Reader
from engine.results_index import ResultIndex
from tests import s3_server
from tests.servers import PgServer, fresh_pg

RESULTS = Path(__file__).resolve().parent / "results" / "shared_store.md"
OWNER = Reader("bench")


def table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "amount": pa.array([i * 0.25 for i in range(rows)], pa.float64()),
            "tag": pa.array([os.urandom(24).hex() for _ in range(rows)]),
        }
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, s3: s3_server.S3Server, pg: PgServer, tmp: str) -> str:
    data = table(args.rows)
    proxy = s3_server.CountingProxy(("127.0.0.1", s3.port))
    proxy.start()
    stores: list[ObjectResultStore] = []
    for endpoint in (s3.endpoint, proxy.endpoint):  # timed directly; bytes counted apart
        cfg = ResultsConfig(
            store="s3", endpoint=endpoint, bucket=s3.bucket, prefix="bench/", index=pg.dsn
        )
        stores.append(
            ObjectResultStore(
                filesystem(cfg, env=s3.env()), s3.bucket, "bench/", ResultIndex(pg.dsn)
            )
        )
    s3_store, counted = stores
    disk = DiskResultStore(Path(tmp) / "results")
    for store in stores:
        await store.open()
    try:
        rid = "req_bench0000001"
        for one in (disk, s3_store):
            await anyio.to_thread.run_sync(
                lambda s=one: s.store_table(rid, data, head_rows=0, owner="bench")
            )
        nbytes = s3_store.nbytes
        s3_store._tables.clear()  # as another process: no in-memory copy of the result
        pages = args.rows // args.size
        rng = random.Random(7)

        def cases(store: ObjectResultStore) -> dict[str, Callable[[int], Awaitable[object]]]:
            async def first_page(n: int) -> object:
                store._footers.clear()
                return await store.page(rid, n, args.size, OWNER)

            return {
                "disk": lambda n: disk.page(rid, n, args.size, OWNER),
                "s3, footer cached": lambda n: store.page(rid, n, args.size, OWNER),
                "s3, first page": first_page,
            }

        timed = cases(s3_store)
        times: dict[str, list[float]] = {k: [] for k in timed}
        await s3_store.page(rid, 1, args.size, OWNER)  # connections and footer in place
        for _ in range(args.samples):
            n = rng.randrange(1, pages + 1)
            for name, read in timed.items():
                began = time.perf_counter()
                await read(n)
                times[name].append((time.perf_counter() - began) * 1000)
        fetched: dict[str, list[int]] = {k: [] for k in timed}
        await counted.page(rid, 1, args.size, OWNER)
        for name, read in cases(counted).items():
            for _ in range(10):
                proxy.reset()
                await read(rng.randrange(1, pages + 1))
                fetched[name].append(proxy.received)
    finally:
        for store in stores:
            await store.close()
        proxy.close()
    return report(args, nbytes, times, fetched)


def report(
    args: argparse.Namespace,
    nbytes: int,
    times: dict[str, list[float]],
    fetched: dict[str, list[int]],
) -> str:
    base = statistics.median(times["disk"])
    lines = [
        "# Page latency: local-disk store vs the shared S3 store",
        "",
        f"`python -m bench.shared_store --rows {args.rows} --samples {args.samples} "
        f"--size {args.size}`: one result of {args.rows:,} rows ({nbytes / 1e6:.1f} MB of "
        f"Parquet, row groups of 10,000 rows), {args.samples} random pages of {args.size} "
        "rows read from each store, interleaved sample by sample (same moment, same load). "
        "S3 is SeaweedFS 4.48 (`weed server -s3`) on loopback, the index in PostgreSQL on "
        "loopback. Bytes fetched are counted apart (10 pages each, through a TCP proxy in front of "
        "SeaweedFS), so the proxy's threads do not weigh on the timings.",
        "",
        "| store | p50 ms | p90 ms | max ms | p50 vs disk | bytes fetched per page (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in times.items():
        got = statistics.median(fetched[name])
        share = f"{got / 1e3:.0f} KB ({got / nbytes:.1%} of the object)" if got else "-"
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {pct(values, 0.9):.2f} | "
            f"{max(values):.2f} | {statistics.median(values) / base:.1f}x | {share} |"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores shared with other work, load average {load} "
        "during the run: absolute figures move with it, the ratios (same moment) less.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    with (
        s3_server.running() as s3,
        fresh_pg() as pg,
        tempfile.TemporaryDirectory(prefix="sluice-bench-store-") as tmp,
    ):
        text = anyio.run(measure, args, s3, pg, tmp)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
