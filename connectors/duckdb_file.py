"""DuckDB files, embedded: every blocking call runs in a worker thread.

Reads use the file opened `read_only=True` (other processes may read it too, and no
statement can change it); each stream takes its own cursor (a cheap connection to the same
database instance) and reads Arrow record batches from it. A write waits until no read is
running, closes the read-only handle, opens the file read-write for that one transaction and
reopens it read-only afterwards (DuckDB cannot hold one file with two configurations in a
process). Timeouts and cancellation call `interrupt()` on the running cursor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import anyio
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, FileSettings
from connectors.duckdb_discovery import discover_duckdb
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut
from connectors.sql_link import apply_link
from connectors.threads import call_interruptible, next_batch
from connectors.types_map import duckdb_type, unique_names

# the file is somebody's data, not a sandbox for us: no extension downloads from a query
_CONFIG = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}


_REJECTED = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.ConstraintException,
)


class _ReadWriteLock:
    """Many readers or one writer (a write swaps the database handle)."""

    def __init__(self) -> None:
        self._cond = anyio.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._cond:
            while self._writing:
                await self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._cond:
            while self._writing or self._readers:
                await self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._writing = False
                    self._cond.notify_all()


class DuckDBSettings(FileSettings, tag="duckdb", frozen=True):
    """Where this connector connects (`type: duckdb` in sluice.yaml)."""

    def default_schemas(self) -> tuple[str, ...]:
        return ("main",)


class DuckDBConnector:
    """A DuckDB file, read-only unless a write was approved."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (DuckDBSettings,)
    language: ClassVar[str] = "sql"
    dialect: ClassVar[str] = "duckdb"
    param_style: ClassVar[str] = "qmark"

    def __init__(self, config: DuckDBSettings) -> None:
        self.config = config
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = _ReadWriteLock()
        self._limiter = anyio.CapacityLimiter(config.pool_size)

    @property
    def _path(self) -> str:
        return self.config.path or ""

    def _connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(self._path, read_only=read_only, config=dict(_CONFIG))

    async def open(self) -> None:
        if self._db is not None:
            return
        if not self._path:
            raise ConnectorUnavailable(self.config.name, "no `path` configured for duckdb")
        try:
            self._db = await anyio.to_thread.run_sync(lambda: self._connect(read_only=True))
        except duckdb.Error as exc:
            raise ConnectorUnavailable(
                self.config.name, f"cannot open {self._path}: {exc}"
            ) from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await anyio.to_thread.run_sync(db.close)

    def _require(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._db

    async def ping(self) -> None:
        async with self._lock.read():
            db = self._require()
            try:
                await anyio.to_thread.run_sync(lambda: db.cursor().execute("SELECT 1").fetchall())
            except duckdb.Error as exc:
                raise ConnectorUnavailable(self.config.name, str(exc)) from exc

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except duckdb.InterruptException as exc:
                raise QueryTimedOut(db, statement.timeout) from exc
            except _REJECTED as exc:  # the statement is at fault (400), DuckDB's message kept
                raise QueryRejected(db, str(exc)) from exc
            except duckdb.Error as exc:
                raise QueryFailed(db, str(exc)) from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    async def stream(self, statement: Statement) -> AsyncGenerator[Batch, None]:
        if statement.readonly:
            async with self._limiter, self._lock.read():
                cursor = await anyio.to_thread.run_sync(self._require().cursor)
                try:
                    # aclosing: an early stop closes the reader here, not in GC's task
                    async with contextlib.aclosing(self._read(cursor, statement)) as batches:
                        async for batch in batches:
                            yield batch
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(cursor.close)
            return
        async with (
            self._writer(statement) as conn,
            contextlib.aclosing(self._read(conn, statement)) as batches,
        ):
            async for batch in batches:
                yield batch

    async def _read(
        self, cursor: duckdb.DuckDBPyConnection, statement: Statement
    ) -> AsyncGenerator[Batch, None]:
        deadline = anyio.current_time() + statement.timeout
        params = list(statement.params) or None

        def start() -> pa.RecordBatchReader | None:
            cursor.execute("SET arrow_lossless_conversion = true")
            rel = cursor.sql(statement.text, params=params)
            if rel is None:  # a write statement already ran
                return None
            return rel.to_arrow_reader(statement.batch_size)

        with self._errors(statement, deadline):
            reader = await call_interruptible(start, cursor.interrupt)
        if reader is None:
            yield Batch([], rows=[])
            return
        try:
            columns, to_rows, to_arrow = _plan(reader.schema)
            sent = 0
            limit = statement.max_rows
            while limit is None or sent < limit:
                with self._errors(statement, deadline):
                    rb = await call_interruptible(next_batch(reader), cursor.interrupt)
                if rb is None:
                    break
                if limit is not None and sent + rb.num_rows > limit:
                    rb = rb.slice(0, limit - sent)
                if rb.num_rows == 0:
                    continue
                sent += rb.num_rows
                if statement.bulk:
                    yield Batch(columns, arrow=to_arrow(rb))
                else:
                    yield Batch(columns, rows=to_rows(rb))
            if sent == 0:
                empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
                yield (
                    Batch(columns, arrow=to_arrow(empty))
                    if statement.bulk
                    else Batch(columns, rows=[])
                )
        finally:
            # a reader left unfinished (max_rows reached, cancelled) sits in a reference
            # cycle that keeps the read-only database open, and the next write would block
            # in duckdb.connect(read_only=False) until the garbage collector ran
            reader.close()
            del reader

    @contextlib.asynccontextmanager
    async def _writer(self, statement: Statement) -> AsyncIterator[duckdb.DuckDBPyConnection]:
        """The file opened read-write inside one transaction that commits only on success."""
        deadline = anyio.current_time() + statement.timeout
        async with self._limiter, self._lock.write():
            old = self._require()
            await anyio.to_thread.run_sync(old.close)
            self._db = None
            try:
                with self._errors(statement, deadline):
                    conn = await anyio.to_thread.run_sync(lambda: self._connect(read_only=False))
                try:
                    await anyio.to_thread.run_sync(conn.execute, "BEGIN TRANSACTION")
                    yield conn
                    with self._errors(statement, deadline):
                        await anyio.to_thread.run_sync(conn.execute, "COMMIT")
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(_rollback_close, conn)
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        self._db = await anyio.to_thread.run_sync(
                            lambda: self._connect(read_only=True)
                        )
                    except duckdb.Error:
                        self._db = None  # open() again reports why

    async def execute_write(self, statement: Statement) -> int:
        deadline = anyio.current_time() + statement.timeout
        async with self._writer(statement) as conn:
            params = list(statement.params) or None

            def run() -> int:
                rows = conn.execute(statement.text, params).fetchall()
                # DuckDB returns the affected count as a one-row result ("Count")
                if rows and len(rows[0]) == 1 and isinstance(rows[0][0], int):
                    return int(rows[0][0])
                return 0

            with self._errors(statement, deadline):
                return await call_interruptible(run, conn.interrupt)

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=60.0)
        deadline = anyio.current_time() + statement.timeout
        async with self._lock.read():
            cursor = await anyio.to_thread.run_sync(self._require().cursor)
            try:
                with self._errors(statement, deadline):
                    return await call_interruptible(
                        lambda: discover_duckdb(cursor), cursor.interrupt
                    )
            finally:
                await anyio.to_thread.run_sync(cursor.close)

    def pool_stats(self) -> PoolStats | None:
        return None

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, dialect=self.dialect, param_style=self.param_style)


def _rollback_close(conn: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        conn.execute("ROLLBACK")
    with contextlib.suppress(duckdb.Error):
        conn.close()


def _plan(
    schema: pa.Schema,
) -> tuple[
    list[Column],
    Callable[[pa.RecordBatch], list[tuple[Any, ...]]],
    Callable[[pa.RecordBatch], pa.RecordBatch],
]:
    """Columns from Arrow (DuckDB's own types) and the two batch conversions."""
    names = unique_names(schema.names)
    columns = [Column(n, _logical(f.type)) for n, f in zip(names, schema, strict=True)]

    def to_arrow(rb: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [
            _hugeint_array(a)
            if _is_hugeint(a.type)
            else a.storage
            if isinstance(a.type, pa.BaseExtensionType) and not isinstance(a.type, pa.UuidType)
            else a
            for a in rb.columns
        ]
        return pa.RecordBatch.from_arrays(arrays, names=names)

    fixes: list[Callable[[Any], Any] | None] = [
        _json
        if c.type == "JSON"
        else _interval
        if c.type == "INTERVAL"
        else _hugeint
        if _is_hugeint(f.type)
        else None
        for c, f in zip(columns, schema, strict=True)
    ]

    def to_rows(rb: pa.RecordBatch) -> list[tuple[Any, ...]]:
        cols = []
        for arr, fix in zip(rb.columns, fixes, strict=True):
            values = arr.to_pylist()
            if fix is not None:
                values = [None if v is None else fix(v) for v in values]
            cols.append(values)
        return list(zip(*cols, strict=True)) if cols else []

    return columns, to_rows, to_arrow


def _plain(arr: pa.Array) -> pa.Array:
    """Lossless export wraps BOOLEAN as bool8 and JSON as arrow.json: hand on plain types."""
    if isinstance(arr.type, pa.Bool8Type):
        return pc.not_equal(arr.storage, 0)
    if isinstance(arr.type, pa.BaseExtensionType) and not isinstance(arr.type, pa.UuidType):
        return arr.storage
    return arr


def _is_hugeint(typ: pa.DataType) -> bool:
    """Lossless export sends (U)HUGEINT - e.g. sum() of integers - as an opaque 16-byte type."""
    return isinstance(typ, pa.OpaqueType) and typ.type_name in ("hugeint", "uhugeint")


def _hugeint(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


def _hugeint_array(arr: pa.Array) -> pa.Array:
    values = [None if v is None else _hugeint(v) for v in arr.storage.to_pylist()]
    return pa.array(values, pa.decimal128(38, 0))


def _logical(typ: pa.DataType) -> str:
    if _is_hugeint(typ):
        return "HUGEINT"
    if isinstance(typ, pa.UuidType):
        return "UUID"
    if isinstance(typ, pa.Bool8Type):
        return "BOOLEAN"
    if isinstance(typ, pa.BaseExtensionType):
        return "JSON" if typ.extension_name == "arrow.json" else "VARCHAR"
    if pa.types.is_decimal(typ):
        return (
            "HUGEINT"
            if typ.scale == 0 and typ.precision == 38
            else duckdb_type(f"DECIMAL({typ.precision},{typ.scale})")
        )
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    simple = {
        pa.bool_(): "BOOLEAN", pa.int8(): "SMALLINT", pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.uint8(): "SMALLINT",
        pa.uint16(): "INTEGER", pa.uint32(): "BIGINT", pa.uint64(): "HUGEINT",
        pa.float32(): "REAL", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR", pa.binary(): "BLOB", pa.large_binary(): "BLOB",
        pa.date32(): "DATE", pa.time64("us"): "TIME", pa.month_day_nano_interval(): "INTERVAL",
    }  # fmt: skip
    return simple.get(typ, "VARCHAR")


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _interval(v: Any) -> Any:
    # Arrow's month-day-nano has no Python equivalent; a month counts as 30 days, as in
    # PostgreSQL's interval-to-epoch
    return dt.timedelta(days=v.months * 30 + v.days, microseconds=v.nanoseconds // 1000)
