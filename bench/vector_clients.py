"""The same top-k search through each backend's own client: what the vector bench compares
sluice with, in the bench process and inside the thin service (bench/thin_vector.py).

Each opener returns `search(q, k, probes) -> rows` (a list of dicts: id, score, bucket) and
`close()`. The search is the one sluice runs for `{"intent": "search", "vector": q,
"limit": k, "probes": probes}`: same metric, same probes, same returned fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

Search = Callable[[np.ndarray, int, int], Awaitable[list[dict[str, Any]]]]
Close = Callable[[], Awaitable[None]]


async def open_lancedb(path: str) -> tuple[Search, Close]:
    import lancedb

    db = await lancedb.connect_async(path)
    table = await db.open_table("points")

    async def search(q: np.ndarray, k: int, probes: int) -> list[dict[str, Any]]:
        query = table.query().nearest_to(q).distance_type("cosine").nprobes(probes)
        got = await query.limit(k).select(["id", "bucket", "_distance"]).to_arrow()
        return [
            {"id": i, "score": 1.0 - d, "bucket": b}
            for i, b, d in zip(
                got.column("id").to_pylist(),
                got.column("bucket").to_pylist(),
                got.column("_distance").to_pylist(),
                strict=True,
            )
        ]

    async def close() -> None:
        table.close()  # type: ignore[no-untyped-call]
        db.close()  # type: ignore[no-untyped-call]

    return search, close


PG_SQL = (
    "SELECT id, 1 - (embedding <=> $1) AS score, bucket FROM points "
    "ORDER BY embedding <=> $1 LIMIT {k}"
)


async def open_pgvector(host: str, pool_size: int = 8, probes: int = 10) -> tuple[Search, Close]:
    """asyncpg as pgvector's documentation uses it: the `pgvector` package's binary codec
    (`register_vector`) on every connection, numpy arrays bound as they are, and the
    usual probes as a connection setting (it survives the pool's RESET ALL), so a search at
    those probes is one `pool.fetch`; other probes take a transaction with SET LOCAL."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    pool = await asyncpg.create_pool(
        host=host,
        user="postgres",
        database="postgres",
        min_size=1,
        max_size=pool_size,
        init=register_vector,
        server_settings={"ivfflat.probes": str(probes)},
    )
    usual = probes

    async def search(q: np.ndarray, k: int, probes: int) -> list[dict[str, Any]]:
        sql = PG_SQL.format(k=int(k))
        if probes == usual:
            return [dict(r) for r in await pool.fetch(sql, q)]
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL ivfflat.probes = {int(probes)}")
            return [dict(r) for r in await conn.fetch(sql, q)]

    return search, pool.close


async def open_qdrant(path: str) -> tuple[Search, Close]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=path)

    async def search(q: np.ndarray, k: int, probes: int) -> list[dict[str, Any]]:
        # the local mode is synchronous: off the loop, as sluice runs it
        got = await asyncio.to_thread(
            lambda: client.query_points("points", query=q, limit=k, with_payload=True)
        )
        return [{"id": p.id, "score": p.score, **(p.payload or {})} for p in got.points]

    async def close() -> None:
        client.close()

    return search, close


OPENERS: dict[str, Callable[[str], Awaitable[tuple[Search, Close]]]] = {
    "lancedb": open_lancedb,
    "pgvector": open_pgvector,
    "qdrant": open_qdrant,
}
