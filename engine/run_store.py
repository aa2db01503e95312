"""The durable run store: run records, idempotency keys and a bounded log tail per run.

Embedded SQLite by default (`<data_dir>/runs.sqlite`, WAL, one connection used by one worker
thread at a time, so there is exactly one writer); with a `postgresql://...` URL the same
tables live in PostgreSQL (asyncpg), so several server processes share one queue. SQL is
written once with `?` placeholders; the PostgreSQL store numbers them.

Idempotency is enforced by the primary key of `run_idempotency` inside the transaction that
inserts the run: two concurrent submits with one key create one run, across processes.
"""

from __future__ import annotations

import base64
import builtins
import os
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
import msgspec

from connectors.errors import SluiceError
from engine.pg_pool import is_url, open_pool, split_url


class RunStatus(StrEnum):
    """A run's status, the one list of them (the API, the CLI and the client use it)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """A run step's state (`truncated`: finished at its row cap)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    TRUNCATED = "truncated"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
RESTART_MESSAGE = "the server stopped while this run was running; marked failed (server_restart)"


class StepState(msgspec.Struct, kw_only=True):
    step_id: str
    state: StepStatus = StepStatus.PENDING
    rows: int = 0
    latency_ms: float | None = None


class RunError(msgspec.Struct, kw_only=True):
    code: str
    message: str
    reason: str | None = None  # timeout, server_restart, shutdown, cancelled, ...


class RunRecord(msgspec.Struct, kw_only=True):
    """One run as stored. Times are epoch seconds; `config` is the canonical JSON of the
    federated query, `payload_hash` what idempotent replays are compared on."""

    run_id: str
    status: str
    submitted_at: float
    config: str
    payload_hash: str
    name: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    records_written: int = 0
    steps: list[StepState] = msgspec.field(default_factory=list)
    error: RunError | None = None
    idempotency_key: str | None = None
    doctor_report: list[dict[str, Any]] | None = None
    timeout_secs: float | None = None
    principal: str | None = None
    owner: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class StoredLog(msgspec.Struct, frozen=True):
    seq: int
    ts: float
    level: str
    message: str


_KEY_SEP = "\x1f"  # between the principal and the client's key in a stored key


def scoped_key(principal: str | None, key: str) -> str:
    """An idempotency key as stored: per principal, so one principal's key never finds (or
    conflicts with, or names) another's run."""
    return f"{principal or ''}{_KEY_SEP}{key}"


def client_key(stored: str) -> str:
    """The key as its client sent it (records stored before scoping have no separator)."""
    return stored.split(_KEY_SEP, 1)[1] if _KEY_SEP in stored else stored


class IdempotencyConflict(SluiceError):
    """Raised when an idempotency key is reused with a different payload (HTTP 409)."""

    code = "idempotency_conflict"
    status = 409

    def __init__(self, key: str, run_id: str) -> None:
        key = client_key(key)
        super().__init__(
            f"idempotency key {key!r} was already used by run {run_id} with a different payload",
            suggestion="use a new idempotency_key, or resend exactly the original request",
        )
        self.details = {"idempotency_key": key, "run_id": run_id}


class InvalidCursor(SluiceError, ValueError):
    """Raised when a list cursor was not produced by this server."""

    code = "invalid_cursor"
    status = 400


_last_id = 0
_id_lock = threading.Lock()


def new_run_id() -> str:
    """32 hex chars: 48-bit milliseconds then 80 random bits (uuid7-like), strictly
    increasing within a process, so ids sort by submission time."""
    global _last_id
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value
    return f"{value:032x}"


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


def _from_row(row: dict[str, Any]) -> RunRecord:
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

_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


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
        return _from_row(rows[0]) if rows else None

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
        return [_from_row(r) for r in rows]

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
        return [_from_row(r) for r in rows]

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
        return [_from_row(r) for r in rows]

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


def _row_values(run: RunRecord) -> builtins.list[Any]:
    return [_to_db(k, getattr(run, k)) for k in _COLUMNS]


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
            return _from_row(dict(existing)), False
    conn.execute(_INSERT_RUN, _row_values(run))
    return run, True


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
                    return _from_row(dict(existing)), False
            await conn.execute(_numbered(_INSERT_RUN), *_row_values(run))
            return run, True


def open_store(url: str | None, data_dir: str | os.PathLike[str]) -> RunStore:
    """`postgresql://...` (optionally `?schema=runs`) or a SQLite path; default
    `<data_dir>/runs.sqlite`."""
    if url and is_url(url):
        return PostgresRunStore(url)
    if url and url.startswith("sqlite:///"):
        return SqliteRunStore(url.removeprefix("sqlite:///"))
    return SqliteRunStore(url or Path(data_dir) / "runs.sqlite")
