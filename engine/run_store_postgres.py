"""The shared run store: the run tables in PostgreSQL (asyncpg), so several server processes
share one queue, one set of idempotency keys and each other's logs."""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from typing import Any

from engine.pg_pool import open_pool, split_url
from engine.run_errors import IdempotencyConflict
from engine.run_records import RunRecord
from engine.run_store import INSERT_RUN, SCHEMA, RunStore, from_row, row_values

_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    n = 0

    def sub(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return _PLACEHOLDER.sub(sub, sql)


class PostgresRunStore(RunStore):
    """The same tables in PostgreSQL, so several server processes share runs and keys.
    `?schema=name` in the URL keeps them in their own schema (created if missing)."""

    exclusive = False

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        self.dsn, self.schema = split_url(url)
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        self._pool = await open_pool(
            self.url,
            pool_size=self.pool_size,
            tables=SCHEMA.format(real="DOUBLE PRECISION"),
            lock_key=727274,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _fetch(self, sql: str, *args: Any) -> builtins.list[dict[str, Any]]:
        rows = await self._pool.fetch(_numbered(sql), *args)
        return [dict(r) for r in rows]

    async def _execute(self, sql: str, *args: Any) -> int:
        status = await self._pool.execute(_numbered(sql), *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._pool.executemany(_numbered(sql), rows)

    async def _insert_tx(
        self, run: RunRecord, expires_at: float | None, now: float
    ) -> tuple[RunRecord, bool]:
        async with self._pool.acquire() as conn, conn.transaction():
            key = run.idempotency_key
            if key is not None:
                await conn.execute(
                    "DELETE FROM run_idempotency WHERE key = $1 AND expires_at <= $2", key, now
                )
                # a concurrent insert of the same key waits here for the other commit
                claimed = await conn.fetchval(
                    "INSERT INTO run_idempotency (key, payload_hash, run_id, expires_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING 1",
                    key,
                    run.payload_hash,
                    run.run_id,
                    expires_at,
                )
                if claimed is None:
                    row = await conn.fetchrow(
                        "SELECT run_id, payload_hash FROM run_idempotency WHERE key = $1", key
                    )
                    if row["payload_hash"] != run.payload_hash:
                        raise IdempotencyConflict(key, row["run_id"])
                    existing = await conn.fetchrow(
                        "SELECT * FROM runs WHERE run_id = $1", row["run_id"]
                    )
                    return from_row(dict(existing)), False
            await conn.execute(_numbered(INSERT_RUN), *row_values(run))
            return run, True
