"""The embedded run store: one SQLite file in WAL mode (the default, `<data_dir>/runs.sqlite`).
No other process shares it, so a `running` row found at start belonged to a dead process."""

from __future__ import annotations

import builtins
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from engine.run_errors import IdempotencyConflict
from engine.run_records import RunRecord
from engine.run_store import INSERT_RUN, SCHEMA, RunStore, from_row, row_values


class SqliteRunStore(RunStore):
    """One SQLite file in WAL mode; a capacity-1 limiter makes its one connection the only
    writer, each call in a worker thread so the event loop never blocks on disk."""

    exclusive = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA.format(real="REAL"))
            return conn

        self._conn = await anyio.to_thread.run_sync(connect, limiter=self._limiter)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("run store is not open")
        return self._conn

    async def _fetch(self, sql: str, *args: Any) -> builtins.list[dict[str, Any]]:
        def go() -> builtins.list[dict[str, Any]]:
            return [dict(r) for r in self._c().execute(sql, args).fetchall()]

        return await anyio.to_thread.run_sync(go, limiter=self._limiter)

    async def _execute(self, sql: str, *args: Any) -> int:
        return await anyio.to_thread.run_sync(
            lambda: self._c().execute(sql, args).rowcount, limiter=self._limiter
        )

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        def go() -> None:
            conn = self._c()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await anyio.to_thread.run_sync(go, limiter=self._limiter)

    async def _insert_tx(
        self, run: RunRecord, expires_at: float | None, now: float
    ) -> tuple[RunRecord, bool]:
        def go() -> tuple[RunRecord, bool]:
            conn = self._c()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = _claim_and_insert_sqlite(conn, run, expires_at, now)
                conn.execute("COMMIT")
                return out
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await anyio.to_thread.run_sync(go, limiter=self._limiter)


def _claim_and_insert_sqlite(
    conn: sqlite3.Connection, run: RunRecord, expires_at: float | None, now: float
) -> tuple[RunRecord, bool]:
    key = run.idempotency_key
    if key is not None:
        conn.execute("DELETE FROM run_idempotency WHERE key = ? AND expires_at <= ?", (key, now))
        claimed = conn.execute(
            "INSERT INTO run_idempotency (key, payload_hash, run_id, expires_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (key, run.payload_hash, run.run_id, expires_at),
        ).rowcount
        if not claimed:
            row = conn.execute(
                "SELECT run_id, payload_hash FROM run_idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row["payload_hash"] != run.payload_hash:
                raise IdempotencyConflict(key, row["run_id"])
            existing = conn.execute(
                "SELECT * FROM runs WHERE run_id = ?", (row["run_id"],)
            ).fetchone()
            return from_row(dict(existing)), False
    conn.execute(INSERT_RUN, row_values(run))
    return run, True
