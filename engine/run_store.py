"""Durability of runs: the run store holds run records, idempotency keys and a bounded log tail
per run, behind one interface (`RunStore`) over two backends.

Embedded SQLite by default (engine/run_store_sqlite.py, `<data_dir>/runs.sqlite`); with a
`postgresql://...` URL the same tables live in PostgreSQL (engine/run_store_postgres.py), so
several server processes share one queue. SQL is written once here with `?` placeholders; the
PostgreSQL store numbers them.

Idempotency is enforced by the primary key of `run_idempotency` inside the transaction that
inserts the run: two concurrent submits with one key create one run, across processes.
"""

from __future__ import annotations

import base64
import builtins
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.pg_pool import is_url
from engine.run_errors import InvalidCursor
from engine.run_records import RunError, RunRecord, RunStatus, StepState, StoredLog


def encode_cursor(run: RunRecord) -> str:
    raw = f"{run.submitted_at!r}|{run.run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, run_id = raw.split("|", 1)
        return float(ts), run_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(
            f"cursor {cursor!r} is not valid", suggestion="pass next_cursor from the previous page"
        ) from None


_JSON_FIELDS = ("labels", "steps", "error", "doctor_report")
_COLUMNS = tuple(RunRecord.__struct_fields__)
_UPDATABLE = frozenset(_COLUMNS) - {"run_id"}
_ENC = msgspec.json.Encoder()
_LABELS = msgspec.json.Decoder(dict[str, str])
_STEPS = msgspec.json.Decoder(list[StepState])
_ERROR = msgspec.json.Decoder(RunError | None)
_REPORT = msgspec.json.Decoder(list[dict[str, Any]] | None)
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "labels": _LABELS,
    "steps": _STEPS,
    "error": _ERROR,
    "doctor_report": _REPORT,
}


def _to_db(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return _ENC.encode(value).decode()
    if name == "cancel_requested":
        return int(value)
    return value


def from_row(row: dict[str, Any]) -> RunRecord:
    values = {k: row[k] for k in _COLUMNS}
    for k in _JSON_FIELDS:
        values[k] = _DECODERS[k].decode(values[k]) if values[k] is not None else None
    values["labels"] = values["labels"] or {}
    values["steps"] = values["steps"] or []
    values["cancel_requested"] = bool(values["cancel_requested"])
    return RunRecord(**values)


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    submitted_at {real} NOT NULL,
    config TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    name TEXT,
    labels TEXT NOT NULL,
    started_at {real},
    finished_at {real},
    records_written BIGINT NOT NULL DEFAULT 0,
    steps TEXT NOT NULL,
    error TEXT,
    idempotency_key TEXT,
    doctor_report TEXT,
    timeout_secs {real},
    principal TEXT,
    owner TEXT,
    heartbeat_at {real},
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_order ON runs (submitted_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, submitted_at, run_id);
CREATE TABLE IF NOT EXISTS run_idempotency (
    key TEXT PRIMARY KEY,
    payload_hash TEXT NOT NULL,
    run_id TEXT NOT NULL,
    expires_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS run_logs (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts {real} NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

INSERT_RUN = f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"


class RunStore(ABC):
    """Same interface over SQLite and PostgreSQL; every method is one short transaction."""

    #: True when no other process can share the store, so every `running` row at start
    #: belonged to a dead process (SQLite); PostgreSQL waits for a stale heartbeat instead.
    exclusive: bool = True

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def _insert_tx(
        self, run: RunRecord, expires_at: float | None, now: float
    ) -> tuple[RunRecord, bool]: ...

    @abstractmethod
    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    # -- runs ------------------------------------------------------------------------------
    async def insert(
        self, run: RunRecord, *, key_ttl: float | None = None
    ) -> tuple[RunRecord, bool]:
        """Insert `run`, claiming its idempotency key in the same transaction.

        Returns (the run, True) when created, or (the existing run, False) for a replay of
        the same payload. Raises IdempotencyConflict when the key holds another payload.
        """
        now = time.time()
        expires = now + key_ttl if run.idempotency_key is not None and key_ttl else None
        if run.idempotency_key is not None and expires is None:
            expires = now + 86_400.0
        return await self._insert_tx(run, expires, now)

    async def find_key(self, key: str) -> tuple[str, str] | None:
        """(run_id, payload_hash) of a live idempotency key."""
        rows = await self._fetch(
            "SELECT run_id, payload_hash FROM run_idempotency WHERE key = ? AND expires_at > ?",
            key,
            time.time(),
        )
        return (rows[0]["run_id"], rows[0]["payload_hash"]) if rows else None

    async def get(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch("SELECT * FROM runs WHERE run_id = ?", run_id)
        return from_row(rows[0]) if rows else None

    async def list(
        self,
        *,
        status: Sequence[str] = (),
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
    ) -> builtins.list[RunRecord]:
        """Runs, newest first. `any_owner=False`: only those of principal `owner` (None:
        the runs submitted without a principal)."""
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if not any_owner:
            if owner is None:
                where.append("principal IS NULL")
            else:
                where.append("principal = ?")
                args.append(owner)
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            args += list(status)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        if since is not None:
            where.append("submitted_at >= ?")
            args.append(since)
        if until is not None:
            where.append("submitted_at < ?")
            args.append(until)
        if cursor:
            ts, rid = decode_cursor(cursor)
            where.append("(submitted_at < ? OR (submitted_at = ? AND run_id < ?))")
            args += [ts, ts, rid]
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY submitted_at DESC, run_id DESC LIMIT ?"
        rows = await self._fetch(sql, *args, limit)
        return [from_row(r) for r in rows]

    async def update(self, run_id: str, *, only_status: Sequence[str] = (), **fields: Any) -> bool:
        """Set fields of one run (optionally only while its status is one of `only_status`);
        True when a row changed."""
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"not run columns: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        args = [_to_db(k, v) for k, v in fields.items()]
        sql = f"UPDATE runs SET {sets} WHERE run_id = ?"
        args.append(run_id)
        if only_status:
            sql += f" AND status IN ({', '.join('?' for _ in only_status)})"
            args += list(only_status)
        return await self._execute(sql, *args) > 0

    async def claim_next(self, owner: str) -> RunRecord | None:
        """Move the oldest queued run to running, owned by `owner` (one winner per run)."""
        while True:
            rows = await self._fetch(
                "SELECT run_id FROM runs WHERE status = 'queued' "
                "ORDER BY submitted_at, run_id LIMIT 1"
            )
            if not rows:
                return None
            now = time.time()
            won = await self.update(
                rows[0]["run_id"],
                only_status=(RunStatus.QUEUED,),
                status=RunStatus.RUNNING,
                started_at=now,
                owner=owner,
                heartbeat_at=now,
            )
            if won:
                return await self.get(rows[0]["run_id"])

    async def count(self, status: str) -> int:
        rows = await self._fetch("SELECT count(*) AS n FROM runs WHERE status = ?", status)
        return int(rows[0]["n"])

    async def counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT status, count(*) AS n FROM runs GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    async def recent_durations(self, n: int = 20) -> builtins.list[float]:
        rows = await self._fetch(
            "SELECT finished_at - started_at AS d FROM runs WHERE status = 'completed' "
            "AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            n,
        )
        return [float(r["d"]) for r in rows if r["d"] is not None]

    async def owned_running(self, owner: str) -> builtins.list[RunRecord]:
        rows = await self._fetch("SELECT * FROM runs WHERE status = 'running' AND owner = ?", owner)
        return [from_row(r) for r in rows]

    async def orphaned(self, owner: str, stale_before: float | None) -> builtins.list[RunRecord]:
        """Running runs whose process is gone: all of them not owned by `owner` in an
        exclusive store (stale_before None), else those whose heartbeat stopped."""
        if stale_before is None:
            rows = await self._fetch(
                "SELECT * FROM runs WHERE status = 'running' AND (owner IS NULL OR owner <> ?)",
                owner,
            )
        else:
            rows = await self._fetch(
                "SELECT * FROM runs WHERE status = 'running' "
                "AND (owner IS NULL OR owner <> ?) "
                "AND (heartbeat_at IS NULL OR heartbeat_at < ?)",
                owner,
                stale_before,
            )
        return [from_row(r) for r in rows]

    async def delete(self, run_id: str) -> bool:
        """Remove a terminal run, its key and its logs; False when it is not terminal."""
        gone = await self._execute(
            "DELETE FROM runs WHERE run_id = ? AND status IN ('completed', 'failed', 'cancelled')",
            run_id,
        )
        if gone:
            await self._execute("DELETE FROM run_idempotency WHERE run_id = ?", run_id)
            await self._execute("DELETE FROM run_logs WHERE run_id = ?", run_id)
        return gone > 0

    async def expire_keys(self) -> int:
        return await self._execute("DELETE FROM run_idempotency WHERE expires_at <= ?", time.time())

    # -- logs ------------------------------------------------------------------------------
    async def append_logs(self, run_id: str, lines: Sequence[StoredLog], keep: int) -> None:
        """Persist lines, then trim the run's tail to its last `keep` lines."""
        if not lines:
            return
        await self._executemany(
            "INSERT INTO run_logs (run_id, seq, ts, level, message) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, seq) DO NOTHING",
            [(run_id, ln.seq, ln.ts, ln.level, ln.message) for ln in lines],
        )
        last = max(ln.seq for ln in lines)
        await self._execute(
            "DELETE FROM run_logs WHERE run_id = ? AND seq <= ?", run_id, last - keep
        )

    async def logs(self, run_id: str, after: int = 0) -> builtins.list[StoredLog]:
        rows = await self._fetch(
            "SELECT seq, ts, level, message FROM run_logs "
            "WHERE run_id = ? AND seq > ? ORDER BY seq",
            run_id,
            after,
        )
        return [StoredLog(int(r["seq"]), float(r["ts"]), r["level"], r["message"]) for r in rows]

    async def last_log_seq(self, run_id: str) -> int:
        rows = await self._fetch("SELECT max(seq) AS m FROM run_logs WHERE run_id = ?", run_id)
        return int(rows[0]["m"] or 0)


def row_values(run: RunRecord) -> builtins.list[Any]:
    return [_to_db(k, getattr(run, k)) for k in _COLUMNS]


def open_store(url: str | None, data_dir: str | os.PathLike[str]) -> RunStore:
    """`postgresql://...` (optionally `?schema=runs`) or a SQLite path; default
    `<data_dir>/runs.sqlite`."""
    # the backends subclass RunStore, so they are imported here, not at the top
    from engine.run_store_postgres import PostgresRunStore
    from engine.run_store_sqlite import SqliteRunStore

    if url and is_url(url):
        return PostgresRunStore(url)
    if url and url.startswith("sqlite:///"):
        return SqliteRunStore(url.removeprefix("sqlite:///"))
    return SqliteRunStore(url or Path(data_dir) / "runs.sqlite")
