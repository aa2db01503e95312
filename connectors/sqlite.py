"""SQLite files (stdlib sqlite3), embedded: every blocking call runs in a worker thread.

A small pool of connections (pool_size) opened `mode=rw` (a missing file is an error, never
a new empty database). Reads run with `PRAGMA query_only=ON` on their connection; writes turn
it off inside `BEGIN IMMEDIATE ... COMMIT`. Timeouts and cancellation interrupt the running
statement (`Connection.interrupt`).

SQLite has no result column types (`sqlite3_column_decltype` is not exposed by the stdlib),
so values are decoded from declared types (DATE, TIMESTAMP, DECIMAL, BOOLEAN, JSON, UUID...;
see `_CONVERTERS`) and each column's type is taken from its first non-NULL value in the
first batch; a column that is all NULL there is VARCHAR.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

import anyio

from connectors.arrow_rows import rows_to_arrow, value_type
from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, FileSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut
from connectors.sql_link import apply_link
from connectors.sqlite_discovery import discover_sqlite
from connectors.threads import call_interruptible
from connectors.types_map import unique_names


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _date(b: bytes) -> Any:
    try:
        return dt.date.fromisoformat(_text(b)[:10])
    except ValueError:
        return _text(b)


def _timestamp(b: bytes) -> Any:
    try:
        return dt.datetime.fromisoformat(_text(b))
    except ValueError:
        return _text(b)


def _timestamptz(b: bytes) -> Any:
    value = _timestamp(b)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # stored without an offset: it was UTC
    return value


def _time(b: bytes) -> Any:
    try:
        return dt.time.fromisoformat(_text(b))
    except ValueError:
        return _text(b)


def _decimal(b: bytes) -> Any:
    try:
        return Decimal(_text(b))
    except InvalidOperation:
        return _text(b)


def _bool(b: bytes) -> Any:
    return _text(b).lower() in {"1", "t", "true", "yes", "y", "on"}


def _json(b: bytes) -> Any:
    try:
        return json.loads(b)
    except ValueError:
        return _text(b)


def _uuid(b: bytes) -> Any:
    try:
        return uuid.UUID(bytes=b) if len(b) == 16 else uuid.UUID(_text(b))
    except ValueError:
        return _text(b)


# Declared type (its first word, as sqlite3's PARSE_DECLTYPES looks it up) -> decoder.
_CONVERTERS: dict[str, Callable[[bytes], Any]] = {
    "DATE": _date,
    "DATETIME": _timestamp,
    "TIMESTAMP": _timestamp,
    "TIMESTAMPTZ": _timestamptz,
    "TIME": _time,
    "DECIMAL": _decimal,
    "NUMERIC": _decimal,
    "BOOLEAN": _bool,
    "BOOL": _bool,
    "JSON": _json,
    "JSONB": _json,
    "UUID": _uuid,
}
for _name, _fn in _CONVERTERS.items():
    # process-wide registry; it only applies to connections opened with detect_types
    sqlite3.register_converter(_name, _fn)
sqlite3.register_adapter(Decimal, str)
sqlite3.register_adapter(uuid.UUID, str)


# SQLite's messages for a statement at fault (400), as opposed to the file's ("locked",
# "disk I/O error", "readonly database")
_REJECTED_PREFIXES = (
    "no such column",
    "no such table",
    "no such function",
    "syntax error",
    "near ",
    "ambiguous column",
    "misuse of",
    "wrong number of arguments",
    "incomplete input",
    "unrecognized token",
    "sub-select returns",
)


class SQLiteSettings(FileSettings, tag="sqlite", frozen=True):
    """Where this connector connects (`type: sqlite` in sluice.yaml)."""

    def default_schemas(self) -> tuple[str, ...]:
        return ("main",)


class SQLiteConnector:
    """A SQLite file, queried from worker threads."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (SQLiteSettings,)
    language: ClassVar[str] = "sql"
    dialect: ClassVar[str] = "sqlite"
    param_style: ClassVar[str] = "qmark"

    def __init__(self, config: SQLiteSettings) -> None:
        self.config = config
        self._free: list[sqlite3.Connection] = []
        self._readonly: dict[int, bool] = {}
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(config.pool_size)
        self._opened = False

    def _connect(self) -> sqlite3.Connection:
        path = Path(self.config.path or "")
        uri = f"{path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(
            uri,
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            detect_types=sqlite3.PARSE_DECLTYPES,
            timeout=self.config.connect_timeout_seconds,
        )
        conn.execute("PRAGMA query_only = ON")
        self._readonly[id(conn)] = True
        return conn

    async def open(self) -> None:
        if self._opened:
            return
        if not self.config.path:
            raise ConnectorUnavailable(self.config.name, "no `path` configured for sqlite")
        try:
            conn = await anyio.to_thread.run_sync(self._connect)
        except sqlite3.Error as exc:
            raise ConnectorUnavailable(
                self.config.name, f"cannot open {self.config.path}: {exc}"
            ) from exc
        self._free.append(conn)
        self._opened = True

    async def close(self) -> None:
        self._opened = False
        with self._lock:
            free, self._free = self._free, []

        def close_all() -> None:
            for conn in free:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

        await anyio.to_thread.run_sync(close_all)

    async def ping(self) -> None:
        async with self._connection(readonly=True, statement=None) as conn:
            try:
                await anyio.to_thread.run_sync(lambda: conn.execute("SELECT 1").fetchone())
            except sqlite3.Error as exc:
                raise ConnectorUnavailable(self.config.name, str(exc)) from exc

    @contextlib.asynccontextmanager
    async def _connection(
        self, *, readonly: bool, statement: Statement | None
    ) -> AsyncIterator[sqlite3.Connection]:
        if not self._opened:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        async with self._limiter:
            with self._lock:
                conn = self._free.pop() if self._free else None
            if conn is None:
                try:
                    conn = await anyio.to_thread.run_sync(self._connect)
                except sqlite3.Error as exc:
                    raise ConnectorUnavailable(self.config.name, str(exc)) from exc
            healthy = False
            try:
                if self._readonly.get(id(conn)) != readonly:
                    pragma = "ON" if readonly else "OFF"
                    await anyio.to_thread.run_sync(conn.execute, f"PRAGMA query_only = {pragma}")
                    self._readonly[id(conn)] = readonly
                yield conn
                healthy = True
            finally:
                with anyio.CancelScope(shield=True):
                    healthy = await anyio.to_thread.run_sync(_reset, conn) and healthy
                if healthy and self._opened:
                    with self._lock:
                        self._free.append(conn)
                else:
                    self._readonly.pop(id(conn), None)
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except sqlite3.OperationalError as exc:
                if str(exc) == "interrupted" and anyio.current_time() >= deadline:
                    raise QueryTimedOut(db, statement.timeout) from exc
                if str(exc).startswith(_REJECTED_PREFIXES):
                    raise QueryRejected(db, str(exc)) from exc
                raise QueryFailed(db, str(exc)) from exc
            except sqlite3.IntegrityError as exc:
                raise QueryRejected(db, str(exc)) from exc
            except (sqlite3.Error, ValueError, OverflowError) as exc:
                raise QueryFailed(db, str(exc)) from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        deadline = anyio.current_time() + statement.timeout
        async with self._connection(readonly=statement.readonly, statement=statement) as conn:
            params = tuple(statement.params)

            def start() -> sqlite3.Cursor:
                if not statement.readonly:
                    conn.execute("BEGIN IMMEDIATE")
                return conn.execute(statement.text, params)

            with self._errors(statement, deadline):
                cursor = await call_interruptible(start, conn.interrupt)
            names = unique_names(d[0] for d in cursor.description or ())
            columns: list[Column] | None = None
            sent = 0
            limit = statement.max_rows
            try:
                while limit is None or sent < limit:
                    want = (
                        statement.batch_size
                        if limit is None
                        else min(statement.batch_size, limit - sent)
                    )
                    with self._errors(statement, deadline):
                        rows = await call_interruptible(
                            functools.partial(cursor.fetchmany, want), conn.interrupt
                        )
                    if columns is None:
                        columns = _columns(names, rows)
                    if rows:
                        sent += len(rows)
                        yield _batch(columns, rows, statement.bulk)
                    if len(rows) < want:
                        break
                if sent == 0:
                    yield _batch(columns or _columns(names, []), [], statement.bulk)
                if not statement.readonly:
                    with self._errors(statement, deadline):
                        await anyio.to_thread.run_sync(conn.execute, "COMMIT")
            finally:
                cursor.close()

    async def execute_write(self, statement: Statement) -> int:
        deadline = anyio.current_time() + statement.timeout
        async with self._connection(readonly=False, statement=statement) as conn:
            params = tuple(statement.params)

            def run() -> int:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute(statement.text, params)
                count = cur.rowcount
                conn.execute("COMMIT")
                return max(count, 0)

            with self._errors(statement, deadline):
                return await call_interruptible(run, conn.interrupt)

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=60.0)
        deadline = anyio.current_time() + statement.timeout
        async with self._connection(readonly=True, statement=statement) as conn:
            with self._errors(statement, deadline):
                return await call_interruptible(lambda: discover_sqlite(conn), conn.interrupt)

    def pool_stats(self) -> PoolStats | None:
        return None

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, dialect=self.dialect, param_style=self.param_style)


def _reset(conn: sqlite3.Connection) -> bool:
    """Leave no transaction open; False when the connection is no longer usable."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        return False
    return True


def _columns(names: list[str], rows: list[tuple[Any, ...]]) -> list[Column]:
    types = []
    for i in range(len(names)):
        first = next((r[i] for r in rows if r[i] is not None), None)
        types.append(value_type(first))
    return [Column(n, t) for n, t in zip(names, types, strict=True)]


def _batch(columns: list[Column], rows: list[tuple[Any, ...]], bulk: bool) -> Batch:
    if not bulk:
        return Batch(columns, rows=rows)
    return Batch(columns, arrow=rows_to_arrow(columns, rows))
