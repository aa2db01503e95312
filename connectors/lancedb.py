"""LanceDB: a folder of Arrow-native Lance tables, embedded (the vector counterpart of a
DuckDB file), through LanceDB's async API (Rust futures awaited on the event loop).

    databases:
      - name: catalog
        type: lancedb
        path: ./catalog.lance        # the folder must exist; it is never created by a read

A table is a collection: its vector column is the one fixed-size list of floats (its size is
the dimension), `id` is the point id, every other column is payload. The metric is the
distance type of the table's vector index when it has one, else cosine.

Bodies are the `vector` language (connectors/vector_query.py). Filters become DataFusion SQL
built from the parsed JSON: identifiers are checked names in backticks, values are literals
rendered here from typed JSON values (strings quoted, quotes doubled), never client text.
A link is `id IN (...)`/`field IN (...)` of the parent's values, ANDed to the body's filter.

Results are Arrow: `id`, `score` (cosine: 1 - distance; dot: 1 - distance, i.e. the inner
product; l2: the square root of LanceDB's squared distance), then the payload columns typed
from the table's schema (nested values as JSON text), the same for every batch.
Timeouts are LanceDB's own query timeout plus a client deadline; cancellation drops the
Rust future, which stops the scan.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import numpy as np
import pyarrow as pa

from connectors.arrow_rows import arrow_type
from connectors.base import (
    Batch,
    Column,
    FieldInfo,
    LinkFilter,
    PoolStats,
    Statement,
    TableInfo,
)
from connectors.config import DatabaseConfig, FileSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut
from connectors.vector_query import (
    DEFAULT_LIMIT,
    And,
    Cond,
    InvalidVectorQuery,
    Node,
    Not,
    Or,
    VectorQuery,
    parse,
)
from connectors.vector_rows import (
    ID,
    SAMPLE_POINTS,
    SCORE,
    check_dimension,
    check_points,
    collection_of,
    distributions,
    fetch_limit,
    link_statement,
    link_values,
    read_only_refusal,
    search_vector,
    vector_field,
)

if TYPE_CHECKING:
    from lancedb.db import AsyncConnection
    from lancedb.table import AsyncTable


DEFAULT_TIMEOUT_S = 30.0
CLIENT_GRACE_S = 1.0
DEFAULT_METRIC = "cosine"
MAX_TABLES = 10_000
CONSISTENCY = dt.timedelta(seconds=1)
METRIC_KEY = "sluice.metric"
# LanceDB's distance type names -> ours
_METRICS = {"cosine": "cosine", "dot": "dot", "l2": "l2"}


class Layout:
    """A table's shape: its vector column, dimension, metric, id and payload columns."""

    __slots__ = ("dimension", "id_type", "metric", "payload", "schema", "vector")

    def __init__(self, schema: pa.Schema, metric: str) -> None:
        vectors = [
            f.name
            for f in schema
            if pa.types.is_fixed_size_list(f.type) and pa.types.is_floating(f.type.value_type)
        ]
        if not vectors:
            raise InvalidVectorQuery("the table has no vector column (a fixed-size float list)")
        if ID not in schema.names:
            raise InvalidVectorQuery("the table has no `id` column")
        self.schema = schema
        self.vector = vectors[0]
        self.dimension: int = schema.field(self.vector).type.list_size
        self.metric = metric
        self.id_type = schema.field(ID).type
        self.payload = [f.name for f in schema if f.name not in (ID, self.vector)]

    def columns(self, names: Sequence[str], *, scored: bool) -> list[Column]:
        cols = [Column(ID, logical_type(self.id_type))]
        if scored:
            cols.append(Column(SCORE, "DOUBLE"))
        cols += [Column(n, logical_type(self.schema.field(n).type)) for n in names]
        return cols

    def selected(self, query: VectorQuery) -> list[str]:
        wp = query.with_payload
        if wp is True:
            return list(self.payload)
        if wp is False:
            return []
        unknown = [n for n in wp if n not in self.payload]
        if unknown:
            raise InvalidVectorQuery(
                f"`with_payload` names {unknown[0]!r}, not a payload field of the table",
                f"payload fields: {', '.join(self.payload)}",
            )
        return list(wp)


def logical_type(typ: pa.DataType) -> str:
    """An Arrow type of a Lance column -> the DuckDB type its values travel as."""
    if pa.types.is_boolean(typ):
        return "BOOLEAN"
    if pa.types.is_int8(typ) or pa.types.is_int16(typ) or pa.types.is_uint8(typ):
        return "SMALLINT"
    if pa.types.is_int32(typ) or pa.types.is_uint16(typ):
        return "INTEGER"
    if pa.types.is_int64(typ) or pa.types.is_uint32(typ):
        return "BIGINT"
    if pa.types.is_uint64(typ):
        return "HUGEINT"
    if pa.types.is_float16(typ) or pa.types.is_float32(typ):
        return "REAL"
    if pa.types.is_float64(typ):
        return "DOUBLE"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "VARCHAR"
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "BLOB"
    if pa.types.is_date(typ):
        return "DATE"
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    if pa.types.is_decimal(typ) and typ.precision <= 38:
        return f"DECIMAL({typ.precision},{typ.scale})"
    if pa.types.is_list(typ) or pa.types.is_struct(typ) or pa.types.is_fixed_size_list(typ):
        return "JSON"
    return "VARCHAR"


def _as_logical(array: pa.ChunkedArray | pa.Array, logical: str) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    target = arrow_type(logical)
    if logical == "JSON":
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in array.to_pylist()],
            pa.string(),
        )
    if array.type == target:
        return array
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())


# -- filters ---------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """A typed JSON value as a DataFusion SQL literal (the only way a value enters a filter)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidVectorQuery(f"{value} is not a finite number")
        return repr(float(value))
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP {literal(value.isoformat())}"
    if isinstance(value, dt.date):
        return f"DATE {literal(value.isoformat())}"
    text = str(value)
    if "\x00" in text:
        raise InvalidVectorQuery("a filter value holds a NUL character")
    return "'" + text.replace("'", "''") + "'"


def ident(name: str, layout: Layout) -> str:
    if name != ID and name not in layout.payload:
        raise InvalidVectorQuery(
            f"the filter names {name!r}, not a column of the table",
            f"columns: {', '.join([ID, *layout.payload])}",
        )
    return f"`{name}`"


_SQL_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def to_sql(node: Node, layout: Layout) -> str:
    """The JSON filter as a SQL predicate. `$ne`/`$nin`/`$not` keep rows where the field is
    null (as Qdrant's must_not does): NOT of a NULL comparison would drop them."""
    match node:
        case Cond(field=f, op=op, value=v):
            c = ident(f, layout)
            if op == "$eq":
                return f"{c} IS NULL" if v is None else f"{c} = {literal(v)}"
            if op == "$ne":
                return f"{c} IS NOT NULL" if v is None else f"({c} IS NULL OR {c} <> {literal(v)})"
            if op in ("$in", "$nin"):
                values = ", ".join(literal(x) for x in v)
                if op == "$in":
                    return f"{c} IN ({values})"
                return f"({c} IS NULL OR {c} NOT IN ({values}))"
            return f"{c} {_SQL_OPS[op]} {literal(v)}"
        case And(items=items):
            return "(" + " AND ".join(to_sql(i, layout) for i in items) + ")"
        case Or(items=items):
            return "(" + " OR ".join(to_sql(i, layout) for i in items) + ")"
        case Not(item=item):
            inner = to_sql(item, layout)
            return f"(NOT ({inner}) OR ({inner}) IS NULL)"
    raise AssertionError(node)


def where_sql(query: VectorQuery, layout: Layout, link: LinkFilter | None) -> str | None:
    parts = []
    if query.filter is not None:
        parts.append(to_sql(query.filter, layout))
    if query.ids is not None and query.intent != "upsert":
        parts.append(f"`{ID}` IN ({', '.join(literal(i) for i in query.ids)})")
    if link is not None:
        values = link_values(link)
        if not values:
            return "FALSE"
        parts.append(f"{ident(link.column, layout)} IN ({', '.join(map(literal, values))})")
    return " AND ".join(parts) if parts else None


# -- the connector ---------------------------------------------------------------------------


class LanceDBSettings(FileSettings, tag="lancedb", frozen=True):
    """A LanceDB folder (`path`; relative to the config file)."""


class LanceDBConnector:
    """A LanceDB folder through `lancedb.connect_async`."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (LanceDBSettings,)
    language: ClassVar[str] = "vector"
    dialect: ClassVar[str] = "lancedb"

    def __init__(self, config: LanceDBSettings) -> None:
        self.config = config
        self._db: AsyncConnection | None = None
        self._tables: dict[str, AsyncTable] = {}
        self._layouts: dict[str, tuple[float, Layout]] = {}
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S

    @property
    def _path(self) -> str:
        return self.config.path or ""

    async def open(self) -> None:
        if self._db is not None:
            return
        # importing lancedb takes seconds (generated API clients): never on the event loop
        lancedb = await anyio.to_thread.run_sync(importlib.import_module, "lancedb")
        path = self._path
        if not path:
            raise ConnectorUnavailable(self.config.name, "no `path` configured for lancedb")
        if not await anyio.to_thread.run_sync(Path(path).is_dir):
            raise ConnectorUnavailable(
                self.config.name, f"{path} is not a folder", suggestion="create it, or fix `path`"
            )
        try:
            # the folder is shared with other writers: reads see their commits within
            # CONSISTENCY (LanceDB's default never looks again once a table is open; looking
            # on every read costs a manifest check per query), writes always look first
            self._db = await lancedb.connect_async(path, read_consistency_interval=CONSISTENCY)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConnectorUnavailable(self.config.name, f"cannot open {path}: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        tables, self._tables = self._tables, {}
        for t in tables.values():
            t.close()  # type: ignore[no-untyped-call]
        if db is not None:
            db.close()  # type: ignore[no-untyped-call]

    def _require(self) -> AsyncConnection:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._db

    async def ping(self) -> None:
        db = self._require()
        try:
            with anyio.fail_after(self.config.connect_timeout_seconds):
                await db.list_tables(limit=1)
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConnectorUnavailable(self.config.name, f"ping failed: {exc}") from exc

    async def _table(self, name: str) -> AsyncTable:
        table = self._tables.get(name)
        if table is None:
            db = self._require()
            try:
                table = await db.open_table(name)
            except (ValueError, FileNotFoundError, RuntimeError) as exc:
                raise QueryFailed(
                    self.config.name,
                    f"no table {name!r}",
                    suggestion=f"tables: {', '.join(await self._names())}",
                ) from exc
            self._tables[name] = table
        return table

    async def _names(self) -> list[str]:
        """The folder's tables (list_tables pages through them)."""
        db = self._require()
        names: list[str] = []
        token: str | None = None
        while len(names) < MAX_TABLES:
            page = await db.list_tables(page_token=token, limit=1000)
            names += list(page.tables)
            token = page.page_token
            if not token:
                break
        return names[:MAX_TABLES]

    async def _layout(self, table: AsyncTable, *, fresh: bool = False) -> Layout:
        """The table's shape, cached for CONSISTENCY (a schema and an index listing are two
        round trips to the store; a search is often cheaper than both)."""
        now = time.monotonic()
        cached = self._layouts.get(table.name)
        if cached is not None and not fresh and now - cached[0] < CONSISTENCY.total_seconds():
            return cached[1]
        layout = await self._read_layout(table)
        self._layouts[table.name] = (now, layout)
        return layout

    async def _read_layout(self, table: AsyncTable) -> Layout:
        schema = await table.schema()
        # a table made by create_collection keeps its metric in the schema's metadata
        stored = (schema.metadata or {}).get(METRIC_KEY.encode(), b"").decode()
        layout = Layout(schema, _METRICS.get(stored, DEFAULT_METRIC))
        for index in await table.list_indices():
            details = getattr(index, "index_details", None) or {}
            distance = str(details.get("metric_type", "")).lower()
            if layout.vector in getattr(index, "columns", ()) and distance in _METRICS:
                layout.metric = _METRICS[distance]
        return layout

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except InvalidVectorQuery as exc:
                raise QueryRejected(db, exc.message, hint=exc.suggestion) from exc
            except (ValueError, RuntimeError, OSError, pa.ArrowException) as exc:
                if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
                    raise QueryTimedOut(db, statement.timeout) from exc
                raise QueryFailed(db, _first_line(exc)) from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        collection = collection_of(statement, self.config.name)
        with self._errors(statement, deadline):
            query = parse(statement.text)
            if not query.is_read:
                if statement.readonly:
                    raise read_only_refusal(self.config.name, query.intent)
                n = await self._write(collection, query, statement)
                batch = Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])
            else:
                batch = None
        if batch is not None:
            yield batch
            return
        link: LinkFilter | None = statement.options.get("link")
        async with contextlib.aclosing(
            self._read(collection, query, statement, link, deadline)
        ) as batches:
            async for b in batches:
                yield b

    async def _read(
        self,
        collection: str,
        query: VectorQuery,
        statement: Statement,
        link: LinkFilter | None,
        deadline: float,
    ) -> AsyncGenerator[Batch, None]:
        timeout = dt.timedelta(seconds=statement.timeout)
        with self._errors(statement, deadline):
            table = await self._table(collection)
            layout = await self._layout(table)
            where = where_sql(query, layout, link)
            if query.intent == "count":
                n = await table.count_rows(where)
                result: Batch | None = Batch([Column("count", "BIGINT")], rows=[(n,)])
            else:
                result = None
        if result is not None:
            yield result
            return
        limit = fetch_limit(query, statement)
        names = layout.selected(query)
        scored = query.intent in ("search", "near_text", "hybrid")
        columns = layout.columns(names, scored=scored)
        with self._errors(statement, deadline):
            if scored:
                vec = await search_vector(query)
                check_dimension(query, vec, layout.dimension)
                q: Any = (
                    table.query()
                    .nearest_to(np.asarray(vec, dtype=np.float32))
                    .column(layout.vector)
                    .distance_type(layout.metric)
                    .limit(limit or DEFAULT_LIMIT)
                )
                if query.offset:
                    q = q.offset(query.offset)
                if query.probes:
                    q = q.nprobes(query.probes)
                if query.ef:
                    q = q.ef(query.ef)
            else:
                q = table.query()
                if limit is not None:
                    q = q.limit(limit)
                if query.offset:
                    q = q.offset(query.offset)
            if where is not None:
                q = q.where(where)
            q = q.select([ID, *names, "_distance"] if scored else [ID, *names])
            reader = await q.to_batches(max_batch_length=statement.batch_size, timeout=timeout)
        # the reader holds LanceDB's stream; dropping it (when this generator closes) stops it
        sent = 0
        while True:
            with self._errors(statement, deadline):
                try:
                    raw = await reader.__anext__()
                except StopAsyncIteration:
                    break
            if raw.num_rows == 0:
                continue
            if limit is not None and sent + raw.num_rows > limit:
                raw = raw.slice(0, limit - sent)
            sent += raw.num_rows
            yield Batch(columns, arrow=_shape(raw, columns, layout.metric, scored))
            if limit is not None and sent >= limit:
                break
        if sent == 0:
            yield Batch(columns, rows=[])

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        collection = collection_of(statement, self.config.name)
        with self._errors(statement, deadline):
            query = parse(statement.text)
            if query.is_read:
                raise QueryFailed(
                    self.config.name, f"`{query.intent}` is a read; execute_write takes writes"
                )
            return await self._write(collection, query, statement)

    async def _write(self, collection: str, query: VectorQuery, statement: Statement) -> int:
        db = self._require()
        intent = query.intent
        if intent == "create_collection":
            assert query.dimension is not None
            schema = pa.schema(
                [
                    pa.field(ID, pa.int64(), nullable=False),
                    pa.field("vector", pa.list_(pa.float32(), query.dimension), nullable=False),
                ],
                metadata={METRIC_KEY: str(query.metric)},
            )
            await db.create_table(collection, schema=schema, exist_ok=False)
            return 0
        if intent == "drop_collection":
            self._tables.pop(collection, None)
            self._layouts.pop(collection, None)
            await db.drop_table(collection)
            return 0
        table = await self._table(collection)
        # a write starts from the newest commit, never a stale one
        await table.checkout_latest()  # type: ignore[no-untyped-call]
        layout = await self._layout(table, fresh=True)
        if intent == "upsert":
            check_points(query, layout.dimension)
            new = _new_fields(query, layout)
            if new:
                # nullable columns first (LanceDB's schema evolution: existing rows get
                # NULL), then the points; a failed upsert leaves the columns, empty
                await table.add_columns(new)
                layout = await self._layout(table, fresh=True)
            data = _points_table(query, layout)
            merge = table.merge_insert(ID).when_matched_update_all()
            result = await merge.when_not_matched_insert_all().execute(data)
            return int(result.num_updated_rows + result.num_inserted_rows)
        if intent == "delete_all":
            return _deleted(await table.delete("true"))
        where = where_sql(query, layout, None) or "true"
        if intent == "delete":
            return _deleted(await table.delete(where))
        # set_payload / update: only payload columns, values as typed literals
        updates = {}
        for key, value in query.payload.items():
            if key not in layout.payload:
                raise InvalidVectorQuery(
                    f"`payload` sets {key!r}, not a payload column of the table",
                    f"payload columns: {', '.join(layout.payload)}",
                )
            updates[key] = literal(_json_value(value, layout.schema.field(key).type))
        result = await table.update(updates_sql=updates, where=where)
        return int(result.rows_updated)

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        out = []
        with self._errors(statement, deadline):
            for name in sorted(await self._names()):
                table = await self._table(name)
                try:
                    layout = await self._layout(table)
                except InvalidVectorQuery as exc:
                    note = f"not a vector table: {exc.message}"
                    out.append(TableInfo(name=name, fields=[], description=note))
                    continue
                head = table.query().select([ID, *layout.payload]).limit(SAMPLE_POINTS)
                sample = await head.to_arrow()
                dists = distributions(sample)
                fields = [
                    FieldInfo(
                        name=c.name,
                        data_type=c.type,
                        is_primary=c.name == ID,
                        nullable=layout.schema.field(c.name).nullable,
                        distribution=dists.get(c.name),
                    )
                    for c in layout.columns(layout.payload, scored=False)
                ]
                fields.insert(1, vector_field(layout.vector, layout.dimension, layout.metric))
                out.append(
                    TableInfo(
                        name=name,
                        fields=fields,
                        row_count_estimate=await table.count_rows(),
                        description=f"{layout.dimension}-dimensional vectors, {layout.metric}",
                    )
                )
        return out

    def pool_stats(self) -> PoolStats | None:
        return None

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return link_statement(statement, link)


def _shape(
    raw: pa.RecordBatch, columns: Sequence[Column], metric: str, scored: bool
) -> pa.RecordBatch:
    arrays = []
    for col in columns:
        if col.name == SCORE:
            # numpy, not pyarrow.compute: each compute call costs ~50 us of Python
            d = raw.column("_distance").to_numpy(zero_copy_only=False).astype(np.float64)
            arrays.append(pa.array(np.sqrt(np.maximum(d, 0.0)) if metric == "l2" else 1.0 - d))
        else:
            arrays.append(_as_logical(raw.column(col.name), col.type))
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


def _deleted(result: Any) -> int:
    """Rows a delete removed (LanceDB's DeleteResult; its stubs lag behind the class)."""
    return int(result.num_deleted_rows)


def _json_value(value: Any, typ: pa.DataType) -> Any:
    if isinstance(value, dict | list):
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            return json.dumps(value)
        raise InvalidVectorQuery("a nested payload value fits only a string column")
    return value


def _new_fields(query: VectorQuery, layout: Layout) -> list[pa.Field]:
    """The payload fields the points set that the table lacks, typed from their values, when
    the body asks to add them (`add_fields`, the A level); else they are refused by name (a
    Lance table has a fixed schema)."""
    values: dict[str, list[Any]] = {}
    for p in query.points:
        for key, value in p.payload.items():
            if key not in layout.payload and key != layout.vector:
                values.setdefault(key, []).append(value)
    if not values:
        return []
    if not query.add_fields:
        names = ", ".join(sorted(values))
        raise InvalidVectorQuery(
            f"the points set fields the table does not have: {names}",
            'add "add_fields": true to the upsert to add them as nullable columns '
            f"(needs the A level), or use the table's fields: {', '.join(layout.payload)}",
        )
    return [pa.field(name, _field_type(name, vs), nullable=True) for name, vs in values.items()]


def _field_type(name: str, values: list[Any]) -> pa.DataType:
    """The Arrow type of a new column from its JSON values (nested values: JSON text)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        raise InvalidVectorQuery(f"new field {name!r} is null in every point: its type is unknown")
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {str} or kinds <= {dict, list}:
        return pa.string()
    found = ", ".join(sorted(k.__name__ for k in kinds))
    raise InvalidVectorQuery(
        f"new field {name!r} has values of mixed types ({found})",
        "send one type per field",
    )


def _points_table(query: VectorQuery, layout: Layout) -> pa.Table:
    """The points as an Arrow table of the table's schema (new fields were added before)."""
    columns: dict[str, pa.Array] = {}
    for f in layout.schema:
        if f.name == ID:
            values: list[Any] = [p.id for p in query.points]
        elif f.name == layout.vector:
            values = [list(p.vector) for p in query.points]
        else:
            values = [_json_value(p.payload.get(f.name), f.type) for p in query.points]
        try:
            columns[f.name] = pa.array(values, type=f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise InvalidVectorQuery(f"points: {f.name!r} does not fit {f.type}: {exc}") from exc
    return pa.Table.from_pydict(columns, schema=layout.schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
