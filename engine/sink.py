"""The DuckDB sink: one locked-down database per process, one schema per request.

`duckdb.connect()` costs 8-15 ms and `cursor()` 3 us, so the process keeps one database and
each request works through its own cursor, with its step tables in a schema of its own
(`req_<hex>`) that is dropped once the result is stored. Each append has ~0.8 ms of fixed
cost, so the request's single writer buffers batches and appends them in Arrow chunks of
`FLUSH_ROWS` or more (never one INSERT per row). Column types come from the connector's
`Batch.columns` (DuckDB type names), never guessed from values. Every DuckDB call runs in a
worker thread.

With a spill area (engine.spill), a step whose batches pass its `spill_after` bytes moves to
Parquet files instead (its table here stays, empty, holding the columns and their types), and
the request's merge runs in a DuckDB of its own sized from the merge pool (engine.memory).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import duckdb
import pyarrow as pa
from anyio.abc import ObjectReceiveStream, TaskStatus

from connectors.arrow_rows import ARROW_TYPES
from connectors.arrow_rows import arrow_type as connector_arrow_type
from connectors.base import Batch, Column
from engine.memory import Grant, MemoryPool, MiB, Shares, default_budget
from engine.spill import RequestSpill, SpillArea, open_merge_db, parquet_list

FLUSH_ROWS = 65_536
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_TYPE_OK = re.compile(r"^[A-Z]+( ?\(\d+(,\s*\d+)?\))?$")


def duck_type(name: str) -> str:
    """The DuckDB column type for a connector type name (unknown or bare DECIMAL: see why)."""
    t = name.strip().upper()
    if t == "DECIMAL":
        # a DECIMAL without (p,s) (e.g. PostgreSQL `numeric`) has no faithful fixed type
        return "DOUBLE"
    if _DECIMAL.match(t) or t in ARROW_TYPES:
        return t
    return "VARCHAR" if not _TYPE_OK.match(t) else t


def arrow_type(duck: str) -> pa.DataType:
    """UUIDs come in as text here and DuckDB CASTs them (see to_array)."""
    return connector_arrow_type(duck, uuid_as_text=True)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def to_array(values: list[Any], duck: str) -> pa.Array:
    """Python values of one column as an Arrow array of the column's type; values the
    driver gave in another form (SQLite text dates, say) travel as text for DuckDB to CAST."""
    if duck in ("JSON", "UUID"):
        return pa.array(
            [None if v is None else v if isinstance(v, str) else _text(v) for v in values],
            pa.string(),
        )
    target = arrow_type(duck)
    try:
        return pa.array(values, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return pa.array([None if v is None else _text(v) for v in values], pa.string())


def unique_names(columns: Sequence[Column]) -> list[str]:
    """Column names made unique (case-insensitively, as DuckDB compares them): id, id_2."""
    seen: set[str] = set()
    out: list[str] = []
    for c in columns:
        name, n = c.name or "column", 1
        while name.lower() in seen:
            n += 1
            name = f"{c.name}_{n}"
        seen.add(name.lower())
        out.append(name)
    return out


def batch_table(batch: Batch, names: list[str], types: list[str]) -> pa.Table:
    """One batch as an Arrow table with unique column names."""
    if batch.arrow is not None:
        return pa.Table.from_batches([batch.arrow]).rename_columns(names)
    rows = batch.rows or []
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table([to_array(list(c), t) for c, t in zip(cols, types, strict=True)], names=names)


class Sink:
    """The process's DuckDB database, locked down at creation (created once, by the Engine).

    Args:
        path: a database file (e.g. under the data dir) or None for an in-memory database.
        threads: DuckDB worker threads (default: the core count).
        memory_limit: e.g. "4GB" (default: a share of half the machine's memory, as
            engine.memory sizes it); DuckDB spills past it into `temp_directory` (at most
            `max_temp_size`), else fails the merge.
        spill: where large steps go as Parquet (None: every step stays in this DuckDB).
        pool: the memory the merges of spilled requests share (needed with `spill`).
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        temp_directory: str | None = None,
        max_temp_size: str | None = None,
        spill: SpillArea | None = None,
        pool: MemoryPool | None = None,
    ) -> None:
        if spill is not None and pool is None:
            raise ValueError("a sink that spills needs the merge pool its merges share")
        self.spill = spill
        self.pool = pool
        self.threads = threads or os.cpu_count() or 1
        config: dict[str, str | bool | int | float | list[str]] = {
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": self.threads,
            "memory_limit": memory_limit or f"{Shares.of(default_budget()).sink // MiB}MiB",
        }
        if temp_directory is not None:  # past memory_limit a merge spills here, up to a cap
            config["temp_directory"] = temp_directory
        if max_temp_size is not None:
            config["max_temp_directory_size"] = max_temp_size
        config["lock_configuration"] = True
        self.conn = duckdb.connect(path or ":memory:", config=config)
        self._lock = threading.Lock()  # conn.cursor() from several threads at once

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.conn.cursor()

    async def open_request(self, request_id: str) -> RequestTables:
        """A cursor and a fresh schema for one request's step tables."""
        schema = f"req_{secrets.token_hex(6)}"
        cur = await anyio.to_thread.run_sync(self.cursor)
        await anyio.to_thread.run_sync(cur.execute, f"CREATE SCHEMA {quote(schema)}")
        return RequestTables(
            request_id=request_id,
            schema=schema,
            cursor=cur,
            spill=self.spill.request(schema) if self.spill is not None else None,
            spill_after=self.spill.spill_after if self.spill is not None else None,
            pool=self.pool,
            threads=self.threads,
        )

    def schemas(self) -> list[str]:
        """Request schemas that exist now (tests check that every request drops its own)."""
        cur = self.cursor()
        try:
            rows = cur.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'req_%'"
            ).fetchall()
        finally:
            cur.close()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.conn.close()


@dataclass
class TableState:
    columns: dict[str, str] = field(default_factory=dict)  # name (lower) -> DuckDB type
    names: dict[str, str] = field(default_factory=dict)  # lower -> as created
    rows: int = 0
    # columns typed only by a batch without rows (a guess, e.g. a MongoDB projection); the
    # first batch with rows that declares one of them sets its real type
    provisional: set[str] = field(default_factory=set)


Declared = list[tuple[str, str]]  # (unique column name, DuckDB type)


@dataclass
class _Buffer:
    pieces: list[tuple[pa.Table, Declared]] = field(default_factory=list)
    rows: int = 0


def _every_column(state: TableState, data: pa.Table) -> str:
    """A spilled piece's select list: every column the step has so far, in its table's
    order, NULL where the piece has none (a document store's batches differ), so a file's
    columns change only when the step's do."""
    present = {f.name.lower(): f.name for f in data.schema}
    return ", ".join(
        f"CAST({quote(present[key]) if key in present else 'NULL'} AS {state.columns[key]}) "
        f"AS {quote(name)}"
        for key, name in state.names.items()
    )


# what a step sends to the writer: a batch of its rows, or None once it has finished
Message = tuple[str, Batch | None]


@dataclass
class RequestTables:
    """One request's schema in the sink, written by exactly one writer (`serve`)."""

    request_id: str
    schema: str
    cursor: duckdb.DuckDBPyConnection
    tables: dict[str, TableState] = field(default_factory=dict)
    flushes: int = 0
    spill: RequestSpill | None = None  # None: nothing spills (no spill area)
    spill_after: int | None = None  # a step's bytes past which it goes to Parquet
    pool: MemoryPool | None = None
    threads: int = 1
    merge_memory_limit: int | None = None  # the grant of a merge in its own DuckDB
    _seen: dict[str, int] = field(default_factory=dict)  # Arrow bytes per step so far
    _merge_db: duckdb.DuckDBPyConnection | None = None
    _grant: Grant | None = None
    _dropped: bool = False

    def table_name(self, step_id: str) -> str:
        return f"{quote(self.schema)}.{quote(step_id)}"

    async def serve(
        self,
        receive: ObjectReceiveStream[Message],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The request's writer: buffer each step's batches and append them in bulk.

        Started with `await tg.start(tables.serve, receive)`; returns once every sender has
        closed its clone of the stream, with every buffered row written.
        """
        buffers: dict[str, _Buffer] = {}
        task_status.started()
        async with receive:
            async for step_id, batch in receive:
                buf = buffers.setdefault(step_id, _Buffer())
                if batch is None:
                    await self._flush(step_id, buf)
                    continue
                table, declared = self._as_table(batch)
                # create it now, even for an empty batch; an empty batch that knows no
                # columns (a linked document-store batch that matched nothing) waits
                if step_id not in self.tables and batch.columns:
                    await anyio.to_thread.run_sync(
                        self._ensure_columns, step_id, declared, table.num_rows == 0
                    )
                if table.num_rows:
                    buf.pieces.append((table, declared))
                    buf.rows += table.num_rows
                    await self._maybe_spill(step_id, table.nbytes)
                if buf.rows >= FLUSH_ROWS:
                    await self._flush(step_id, buf)
        for step_id, buf in buffers.items():
            await self._flush(step_id, buf)

    @property
    def spilled(self) -> list[str]:
        """The steps that went to Parquet."""
        return list(self.spill.steps) if self.spill is not None else []

    async def _maybe_spill(self, step_id: str, nbytes: int) -> None:
        seen = self._seen[step_id] = self._seen.get(step_id, 0) + nbytes
        if self.spill is None or self.spill_after is None or step_id in self.spill.steps:
            return
        if seen > self.spill_after:
            await anyio.to_thread.run_sync(self._start_spill, step_id)

    def _start_spill(self, step_id: str) -> None:
        """Move what the step's table holds so far to its Parquet file, and empty the table
        (which keeps the columns, so later batches are typed as before)."""
        assert self.spill is not None
        files = self.spill.step(step_id)
        state = self.tables.get(step_id)
        if state is None or not state.rows:
            return
        table = self.table_name(step_id)
        reader = self.cursor.sql(f"SELECT * FROM {table}").to_arrow_reader(FLUSH_ROWS)
        for chunk in reader:
            files.write(pa.Table.from_batches([chunk]), self.spill.disk)
        self.run(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table} LIMIT 0")

    @staticmethod
    def _as_table(batch: Batch) -> tuple[pa.Table, Declared]:
        names = unique_names(batch.columns)
        types = [duck_type(c.type) for c in batch.columns]
        return batch_table(batch, names, types), list(zip(names, types, strict=True))

    async def _flush(self, step_id: str, buf: _Buffer) -> None:
        if not buf.pieces:
            return
        pieces, buf.pieces, buf.rows = buf.pieces, [], 0
        await anyio.to_thread.run_sync(self._append, step_id, pieces)

    def _ensure_columns(
        self, step_id: str, declared: Declared, provisional: bool = False
    ) -> TableState:
        """Create the step table, or add the columns a later batch brought (MongoDB).

        `provisional`: the batch has no rows, so its types are a guess; a later batch with
        rows settles them (ALTER ... TYPE is safe then: those columns hold only NULLs)."""
        table = self.table_name(step_id)
        state = self.tables.get(step_id)
        if state is None:
            state = TableState()
            cols = ", ".join(f"{quote(n)} {t}" for n, t in declared)
            self.run(f"CREATE TABLE {table} ({cols})")
            self.tables[step_id] = state
        else:
            for name, typ in declared:
                key = name.lower()
                if key not in state.columns:
                    self.run(f"ALTER TABLE {table} ADD COLUMN {quote(name)} {typ}")
                elif not provisional and key in state.provisional:
                    if state.columns[key] != typ:
                        col = quote(state.names[key])
                        self.run(f"ALTER TABLE {table} ALTER COLUMN {col} TYPE {typ}")
                        state.columns[key] = typ
                    state.provisional.discard(key)
        for name, typ in declared:
            key = name.lower()
            if key not in state.columns and provisional:
                state.provisional.add(key)
            state.columns.setdefault(key, typ)
            state.names.setdefault(key, name)
        return state

    def _append(self, step_id: str, pieces: list[tuple[pa.Table, Declared]]) -> None:
        groups: list[tuple[list[pa.Table], Declared]] = []
        for piece, declared in pieces:  # consecutive same-schema pieces: one append
            if groups and groups[-1][0][0].schema.equals(piece.schema):
                groups[-1][0].append(piece)
            else:
                groups.append(([piece], declared))
        for group, declared in groups:
            data = pa.concat_tables(group) if len(group) > 1 else group[0]
            state = self._ensure_columns(step_id, declared)
            view = f"_sluice_in_{secrets.token_hex(4)}"
            select = ", ".join(
                f"CAST({quote(f.name)} AS {state.columns[f.name.lower()]}) AS {quote(f.name)}"
                for f in data.schema
            )
            files = self.spill.steps.get(step_id) if self.spill is not None else None
            self.cursor.register(view, data)
            try:
                if files is None:
                    self.run(
                        f"INSERT INTO {self.table_name(step_id)} BY NAME "
                        f"SELECT {select} FROM {quote(view)}"
                    )
                else:  # typed by DuckDB's CAST as an append would be, then to Parquet
                    assert self.spill is not None
                    typed = self.cursor.sql(
                        f"SELECT {_every_column(state, data)} FROM {quote(view)}"
                    )
                    files.write(typed.to_arrow_table(), self.spill.disk)
            finally:
                self.cursor.unregister(view)
            state.rows += data.num_rows
            self.flushes += 1

    async def create_empty(self, step_id: str, columns: Sequence[Column]) -> None:
        """The table of a step that produced no batch at all (e.g. its parent was empty)."""
        if step_id in self.tables or not columns:
            return
        declared = list(
            zip(unique_names(columns), [duck_type(c.type) for c in columns], strict=True)
        )
        await anyio.to_thread.run_sync(self._ensure_columns, step_id, declared)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        """Execute and fetch everything: DuckDB 2 refuses new work on a cursor whose last
        result was not read to the end."""
        return self.cursor.execute(sql).fetchall()

    async def count(self, step_id: str) -> int:
        def go() -> int:
            rows = self.run(f"SELECT count(*) FROM {self.table_name(step_id)}")
            return int(rows[0][0])

        return await anyio.to_thread.run_sync(go)

    @property
    def merge_cursor(self) -> duckdb.DuckDBPyConnection:
        """Where the merge runs: the request's own DuckDB once steps spilled, else here."""
        return self._merge_db if self._merge_db is not None else self.cursor

    async def prepare_merge(self) -> None:
        """With spilled steps: wait for a grant from the merge pool, open the request's own
        DuckDB with it as `memory_limit`, read the spilled steps through views over their
        files and copy the other (small: under spill_after each) step tables in, under the
        same schema name, so the merge SQL is qualified as it would be here."""
        if self.spill is None or not self.spill.steps:
            return
        assert self.pool is not None
        spill = self.spill
        await anyio.to_thread.run_sync(spill.finish)
        self._grant = await self.pool.acquire()
        self.merge_memory_limit = self._grant.nbytes

        def build() -> None:
            self._merge_db = db = open_merge_db(spill, self.merge_memory_limit or 0, self.threads)
            db.execute(f"CREATE SCHEMA {quote(self.schema)}")
            for step_id, state in self.tables.items():
                target = self.table_name(step_id)
                files = spill.steps.get(step_id)
                if files is not None:
                    written = files.columns()  # a column added after the last write: NULL
                    cols = ", ".join(
                        f"CAST({quote(name) if key in written else 'NULL'} AS "
                        f"{state.columns[key]}) AS {quote(name)}"
                        for key, name in state.names.items()
                    )
                    union = ", union_by_name = true" if len(files.files) > 1 else ""
                    db.execute(
                        f"CREATE VIEW {target} AS SELECT {cols} "
                        f"FROM read_parquet({parquet_list(files.files)}{union})"
                    )
                    continue
                # small (under spill_after): copied in, as a DuckDB table scans faster than
                # registered Arrow (measured: the 10M-event join's merge 1.45 s against 2.7 s)
                reader = self.cursor.sql(f"SELECT * FROM {target}").to_arrow_reader(FLUSH_ROWS)
                db.register("_sluice_copy", reader)
                try:
                    db.execute(f"CREATE TABLE {target} AS SELECT * FROM _sluice_copy")
                finally:
                    db.unregister("_sluice_copy")

        await anyio.to_thread.run_sync(build)

    async def drop(self) -> None:
        """Drop the request's schema, close its cursor and its merge's DuckDB, remove its
        spill files and give its memory grant back (idempotent; survives cancel)."""
        if self._dropped:
            return
        self._dropped = True

        def go() -> None:
            try:
                if self._merge_db is not None:
                    self._merge_db.close()
            finally:
                try:
                    if self.spill is not None:
                        self.spill.remove()
                finally:
                    try:
                        self.run(f"DROP SCHEMA IF EXISTS {quote(self.schema)} CASCADE")
                    finally:
                        self.cursor.close()

        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(go)
            finally:
                if self._grant is not None and self.pool is not None:
                    await self.pool.release(self._grant)
