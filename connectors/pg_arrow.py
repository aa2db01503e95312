"""PostgreSQL's bulk path: ADBC record batches read in a worker thread, bounded and stoppable.

ADBC connections are blocking and not cheap (a libpq connect), so a small free list keeps
them; one is used by one stream at a time. Each stream runs in its own explicit transaction
(`BEGIN READ ONLY` + `SET LOCAL statement_timeout`) and ends with ROLLBACK (COMMIT for an
approved write), so a reused connection is always clean.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Batch, Column, Statement
from connectors.errors import (
    ConnectorUnavailable,
    QueryFailed,
    QueryRejected,
    QueryTimedOut,
    statement_at_fault,
)
from connectors.threads import call_interruptible, next_batch
from connectors.types_map import pg_type, unique_names

_PG_ERROR = re.compile(r"ERROR:\s+(.*?)(?:\n|$)")


class AdbcPool:
    """A free list of ADBC PostgreSQL connections (blocking methods: call from a thread)."""

    def __init__(self, uri: str, *, size: int, settings: dict[str, str]) -> None:
        self.uri = uri
        self.limiter = anyio.CapacityLimiter(size)
        self._settings = settings
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> Any:
        with self._lock:
            if self._free:
                return self._free.pop()
        import adbc_driver_postgresql.dbapi as adbc  # loaded on first bulk read only

        conn = adbc.connect(self.uri, autocommit=True)
        with contextlib.closing(conn.cursor()) as cur:
            for key, value in self._settings.items():
                cur.execute(f"SET {key} = '{value}'")
        return conn

    def put(self, conn: Any, *, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed:
                self._free.append(conn)
                return
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for conn in free:
            with contextlib.suppress(Exception):
                conn.close()


def adbc_message(exc: BaseException) -> str:
    """The server's own message out of ADBC's wrapped text."""
    text = str(exc)
    m = _PG_ERROR.search(text)
    return m.group(1).strip() if m else text.strip()


@contextlib.contextmanager
def _errors(database: str, statement: Statement, deadline: float) -> Iterator[None]:
    import adbc_driver_manager

    with anyio.CancelScope(deadline=deadline) as scope:
        try:
            yield
        except adbc_driver_manager.Error as exc:
            if getattr(exc, "sqlstate", None) == "57014" and "statement timeout" in str(exc):
                raise QueryTimedOut(database, statement.timeout) from exc
            if isinstance(exc, adbc_driver_manager.OperationalError) and "connect" in str(exc):
                raise ConnectorUnavailable(database, adbc_message(exc)) from exc
            if statement_at_fault(getattr(exc, "sqlstate", None)):
                raise QueryRejected(
                    database, adbc_message(exc), sqlstate=getattr(exc, "sqlstate", None)
                ) from exc
            raise QueryFailed(database, adbc_message(exc)) from exc
        except OSError as exc:  # errors while reading the Arrow stream surface as OSError
            if "statement timeout" in str(exc):
                raise QueryTimedOut(database, statement.timeout) from exc
            if "ERROR:" in str(exc):
                raise QueryFailed(database, adbc_message(exc)) from exc
            raise ConnectorUnavailable(database, str(exc)) from exc
    if scope.cancelled_caught:
        raise QueryTimedOut(database, statement.timeout)


async def arrow_batches(
    pool: AdbcPool,
    statement: Statement,
    params: tuple[Any, ...],
    deadline: float,
    *,
    database: str,
) -> AsyncGenerator[Batch, None]:
    """Yield the statement's result as Arrow batches of at most `batch_size` rows."""
    async with pool.limiter:
        with _errors(database, statement, deadline):
            conn = await anyio.to_thread.run_sync(pool.get)
        cursor = conn.cursor()
        healthy = False
        try:
            mode = "READ ONLY" if statement.readonly else "READ WRITE"
            ms = max(1, int(statement.timeout * 1000))

            def start() -> pa.RecordBatchReader:
                cursor.execute(f"BEGIN {mode}")
                cursor.execute(f"SET LOCAL statement_timeout = {ms}")
                cursor.execute(statement.text, params or None)
                return cursor.fetch_record_batch()

            with _errors(database, statement, deadline):
                reader = await call_interruptible(start, cursor.adbc_cancel)
            columns, convert = _plan(reader.schema)
            sent = 0
            limit = statement.max_rows
            while limit is None or sent < limit:
                with _errors(database, statement, deadline):
                    raw = await call_interruptible(next_batch(reader), cursor.adbc_cancel)
                if raw is None:
                    break
                rb = convert(raw)
                for offset in range(0, rb.num_rows, statement.batch_size):
                    part = rb.slice(offset, statement.batch_size)
                    if limit is not None and sent + part.num_rows > limit:
                        part = part.slice(0, limit - sent)
                    if part.num_rows == 0:
                        break
                    sent += part.num_rows
                    yield Batch(columns, arrow=part)
            if sent == 0:
                yield Batch(columns, arrow=_empty(columns, convert, reader.schema))
            if not statement.readonly:
                with _errors(database, statement, deadline):
                    await anyio.to_thread.run_sync(cursor.execute, "COMMIT")
            healthy = True
        finally:
            with anyio.CancelScope(shield=True):
                healthy = await anyio.to_thread.run_sync(_finish, cursor) and healthy
                await anyio.to_thread.run_sync(lambda: pool.put(conn, healthy=healthy))


def _finish(cursor: Any) -> bool:
    """Roll back whatever is left and close the cursor; False if the connection is unusable."""
    try:
        cursor.execute("ROLLBACK")
        cursor.close()
    except Exception:
        return False
    return True


def _plan(schema: pa.Schema) -> tuple[list[Column], Callable[[pa.RecordBatch], pa.RecordBatch]]:
    """Column types from ADBC's field metadata, and the cast of each opaque/extension column."""
    names = unique_names(schema.names)
    columns: list[Column] = []
    targets: list[pa.DataType | None] = []
    for name, fld in zip(names, schema, strict=True):
        meta = {k.decode(): v.decode() for k, v in (fld.metadata or {}).items()}
        typname = meta.get("POSTGRESQL:type", "")
        typmod = int(meta.get("POSTGRESQL:typmod", "-1") or -1)
        logical = pg_type(typname, typmod) if typname else "VARCHAR"
        columns.append(Column(name, logical))
        target: pa.DataType | None = None
        if logical.startswith("DECIMAL("):
            p, s = logical[8:-1].split(",")
            target = pa.decimal128(int(p), int(s))
        elif isinstance(fld.type, pa.BaseExtensionType) and logical != "UUID":
            target = fld.type.storage_type  # JSON text and other opaque values as text
        targets.append(target)

    def convert(rb: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for arr, target in zip(rb.columns, targets, strict=True):
            if target is None:
                arrays.append(arr)
                continue
            if isinstance(arr.type, pa.BaseExtensionType):
                arr = arr.storage
            arrays.append(_cast(arr, target))
        return pa.RecordBatch.from_arrays(arrays, names=names)

    return columns, convert


def _cast(arr: pa.Array, target: pa.DataType) -> pa.Array:
    if arr.type == target:
        return arr
    try:
        return pc.cast(arr, target)
    except pa.ArrowInvalid:
        if not pa.types.is_decimal(target):
            raise
        # an unconstrained numeric with more fractional digits than the column keeps: round
        from decimal import Decimal

        q = Decimal(1).scaleb(-target.scale)
        values = [None if v is None else Decimal(v).quantize(q) for v in arr.to_pylist()]
        return pa.array(values, type=target)


def _empty(
    columns: list[Column], convert: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
) -> pa.RecordBatch:
    return convert(pa.RecordBatch.from_pylist([], schema=schema))
