"""The index of the shared result store, in PostgreSQL beside the runs: one row per stored
result (its object, owner, expiry, size, columns and rows per row group).

The row is the record: an object without a row was never stored (or is being written, or was
evicted), so ownership, expiry and the count and byte bounds hold for every process that
shares the index. Deleting a row (expiry, eviction, DELETE) hides the result from all of
them at once; removing its object follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.pg_pool import open_pool

TABLES = """
CREATE TABLE IF NOT EXISTS results (
    request_id TEXT PRIMARY KEY,
    object_key TEXT NOT NULL UNIQUE,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    total_rows BIGINT NOT NULL,
    nbytes BIGINT NOT NULL,
    columns TEXT[] NOT NULL,
    row_groups BIGINT[] NOT NULL
);
CREATE INDEX IF NOT EXISTS results_age ON results (created_at DESC, request_id DESC);
"""
LOCK_KEY = 727275  # beside the run store's 727274
COMMAND_TIMEOUT_S = 30.0  # a page never waits longer on the index
NOW = "extract(epoch FROM clock_timestamp())"  # one clock for every process and host


@dataclass(frozen=True, slots=True)
class IndexEntry:
    request_id: str
    object_key: str
    owner: str | None
    created_at: float
    expires_at: float
    total_rows: int
    nbytes: int
    columns: list[str]
    row_groups: list[int]


def _entry(row: Any) -> IndexEntry:
    return IndexEntry(
        request_id=row["request_id"],
        object_key=row["object_key"],
        owner=row["owner"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        total_rows=row["total_rows"],
        nbytes=row["nbytes"],
        columns=list(row["columns"]),
        row_groups=list(row["row_groups"]),
    )


class ResultIndex:
    """Every method is one short statement (or transaction) on a small pool."""

    def __init__(self, url: str, *, pool_size: int = 3) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        self._pool = await open_pool(
            self.url,
            pool_size=self.pool_size,
            tables=TABLES,
            lock_key=LOCK_KEY,
            command_timeout=COMMAND_TIMEOUT_S,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def put(
        self,
        *,
        request_id: str,
        object_key: str,
        owner: str | None,
        ttl: float,
        total_rows: int,
        nbytes: int,
        columns: list[str],
        row_groups: list[int],
    ) -> str | None:
        """Record a result, replacing one stored under the same id; the replaced object's
        key (to remove), if any. Its age and expiry are on the database's clock, the one
        every process compares them with."""
        async with self._pool.acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                "DELETE FROM results WHERE request_id = $1 RETURNING object_key", request_id
            )
            await conn.execute(
                "INSERT INTO results (request_id, object_key, owner, created_at, expires_at, "
                "total_rows, nbytes, columns, row_groups) "
                f"VALUES ($1, $2, $3, {NOW}, {NOW} + $4::float8, $5, $6, $7, $8)",
                request_id,
                object_key,
                owner,
                ttl,
                total_rows,
                nbytes,
                columns,
                row_groups,
            )
        return str(old) if old is not None else None

    async def get(self, request_id: str) -> IndexEntry | None:
        """The live (unexpired) entry of `request_id`."""
        row = await self._pool.fetchrow(
            f"SELECT * FROM results WHERE request_id = $1 AND expires_at > {NOW}", request_id
        )
        return _entry(row) if row is not None else None

    async def remove(self, request_id: str) -> str | None:
        """Forget one result; its object's key, when there was one."""
        key = await self._pool.fetchval(
            "DELETE FROM results WHERE request_id = $1 RETURNING object_key", request_id
        )
        return str(key) if key is not None else None

    async def evict(self, max_results: int, max_bytes: int) -> list[tuple[str, str]]:
        """Forget the expired results, then the oldest past `max_results` or `max_bytes`
        (the newest are kept while they fit); (request_id, object_key) of each. Concurrent
        callers in other processes each get their own share of the rows."""
        rows = await self._pool.fetch(
            "WITH ranked AS (SELECT request_id, "
            "row_number() OVER w AS n, sum(nbytes) OVER w AS kept "
            f"FROM results WHERE expires_at > {NOW} "
            "WINDOW w AS (ORDER BY created_at DESC, request_id DESC)) "
            f"DELETE FROM results r WHERE r.expires_at <= {NOW} OR r.request_id IN "
            "(SELECT request_id FROM ranked WHERE n > $1 OR kept > $2) "
            "RETURNING r.request_id, r.object_key",
            max_results,
            max_bytes,
        )
        return [(r["request_id"], r["object_key"]) for r in rows]

    async def totals(self) -> tuple[int, int]:
        """(results, bytes) in the whole store."""
        row = await self._pool.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(nbytes), 0) AS b FROM results"
        )
        return int(row["n"]), int(row["b"])

    async def known(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` an entry names."""
        rows = await self._pool.fetch(
            "SELECT object_key FROM results WHERE object_key = ANY($1::text[])", list(keys)
        )
        return {r["object_key"] for r in rows}
