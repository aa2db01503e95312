"""pgvector: a PostgreSQL database with the `vector` extension, queried in the `vector`
language. The intents compile to SQL with bound parameters and run through the PostgreSQL
connector's own pool, transactions, timeouts and cancellation (this class extends it).

    databases:
      - name: embeddings
        type: pgvector            # same connection settings as `postgresql`
        host: 127.0.0.1
        database: app

Why a type of its own rather than a capability of `postgresql`: a connector speaks one
language, and the language decides what the safety pipeline checks. The same database may be
configured twice (as `postgresql` for SQL, as `pgvector` for intents), each with its grants.

A table is a collection when it has a `vector(n)` column (n is the dimension) and an `id`
column; every other column is payload. The metric comes from the operator class of the
column's index (vector_cosine_ops, vector_ip_ops, vector_l2_ops), cosine without one.
Search orders by the operator of that metric (`<=>`, `<#>`, `<->`) so the index is used.

A search is one round trip in the steady state (bench/results/vector.md): the query vector is
bound in pgvector's binary form (a codec registered on each connection the first time it
searches; the `postgresql` connector registers none), and `ef` / `probes` are session
settings (`SET hnsw.ef_search`, `ivfflat.probes`, or RESET when a search leaves them out)
sent only when they differ from what that connection last had. The read runs in an implicit
transaction, read-only by the pool's `default_transaction_read_only`. A connection that took
any other path is reset by the pool (RESET ALL), and what it had is forgotten.

Filters are SQL over the payload columns with every value a `$n` parameter; a link is
`"column" = ANY($n::type[])` ANDed to it, typed as the column is.

Rows: `id`, `score` (cosine: 1 - `<=>`; dot: -`<#>`; l2: `<->`), then the payload columns
with PostgreSQL's types.
"""

from __future__ import annotations

import contextlib
import re
import struct
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import pyarrow as pa

from connectors.arrow_rows import rows_to_arrow
from connectors.base import Batch, Column, FieldInfo, LinkFilter, Statement, TableInfo
from connectors.config import DatabaseConfig
from connectors.errors import QueryFailed, QueryRejected
from connectors.postgres import (
    CLIENT_GRACE_S,
    PostgresConnector,
    PostgresSettings,
    _set_timeout,
)
from connectors.types_map import pg_type
from connectors.vector_query import (
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

DEFAULT_METRIC = "cosine"
# metric -> (distance operator, score expression over the distance `d`, index opclass)
METRIC_SQL: dict[str, tuple[str, str, str]] = {
    "cosine": ("<=>", "1 - ({d})", "vector_cosine_ops"),
    "dot": ("<#>", "-({d})", "vector_ip_ops"),
    "l2": ("<->", "{d}", "vector_l2_ops"),
}
_OPCLASS = re.compile(r"\b(vector_(?:cosine|ip|l2)_ops)\b")
_OPCLASS_METRIC = {"vector_cosine_ops": "cosine", "vector_ip_ops": "dot", "vector_l2_ops": "l2"}

VECTOR_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, a.atttypmod,
       (SELECT array_agg(pg_get_indexdef(i.indexrelid)) FROM pg_index i
        WHERE i.indrelid = c.oid AND a.attnum = ANY(i.indkey::int2[])) AS indexes
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND ($1::text IS NULL OR (n.nspname = $1 AND c.relname = $2))
ORDER BY n.nspname, c.relname, a.attnum
"""

COLUMNS_SQL = """
SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) AS sqltype
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Layout:
    schema: str
    table: str
    vector: str
    dimension: int
    metric: str
    columns: dict[str, tuple[str, str]]  # name -> (typname, format_type) in table order

    @property
    def relation(self) -> str:
        return f"{quote(self.schema)}.{quote(self.table)}"

    @property
    def payload(self) -> list[str]:
        return [c for c in self.columns if c not in (ID, self.vector)]

    def column(self, name: str) -> str:
        if name not in self.columns or name == self.vector:
            raise InvalidVectorQuery(
                f"{name!r} is not a column of {self.table}",
                f"columns: {', '.join([ID, *self.payload])}",
            )
        return quote(name)

    def selected(self, query: VectorQuery) -> list[str]:
        wp = query.with_payload
        if wp is True:
            return self.payload
        if wp is False:
            return []
        for name in wp:
            if name not in self.payload:
                raise InvalidVectorQuery(
                    f"`with_payload` names {name!r}, not a payload column",
                    f"payload columns: {', '.join(self.payload)}",
                )
        return list(wp)

    def result_columns(self, names: Sequence[str], *, scored: bool) -> list[Column]:
        cols = [Column(ID, pg_type(self.columns[ID][0]))]
        if scored:
            cols.append(Column(SCORE, "DOUBLE"))
        return cols + [Column(n, pg_type(self.columns[n][0])) for n in names]


def vector_text(vec: Sequence[float]) -> str:
    """pgvector's text form (the writes bind arrays of it and cast them)."""
    return "[" + ",".join(repr(float(x)) for x in vec) + "]"


def encode_vector(vec: Sequence[float]) -> bytes:
    """pgvector's binary form: dimension and a reserved word (uint16 each), then float4s,
    all big-endian. 1.5 KB for 384 dimensions instead of ~7 KB of text parsed by the server."""
    n = len(vec)
    return struct.pack(f">HH{n}f", n, 0, *vec)


def decode_vector(data: bytes) -> tuple[float, ...]:
    (n,) = struct.unpack_from(">H", data)
    return struct.unpack_from(f">{n}f", data, 4)


VECTOR_TYPE_SQL = """
SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = to_regtype('vector')
"""


async def register_vector_codec(conn: Any) -> None:
    """The binary codec for `vector` on this connection, where the SQL's `::vector` resolves
    (none when the extension is absent: the query then fails as it would anyway)."""
    schema = await conn.fetchval(VECTOR_TYPE_SQL)
    if schema is not None:
        await conn.set_type_codec(
            "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary"
        )


Effort = tuple[int | None, int | None]  # (hnsw.ef_search, ivfflat.probes); None: default
_EFFORT_GUCS = ("hnsw.ef_search", "ivfflat.probes")


def effort_sql(want: Effort) -> str:
    """One simple-protocol batch setting both, RESET for the default."""
    return "; ".join(
        f"RESET {guc}" if value is None else f"SET {guc} = {int(value)}"
        for guc, value in zip(_EFFORT_GUCS, want, strict=True)
    )


class _Params:
    """Collects bound parameters and returns their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, cast: str | None = None) -> str:
        self.values.append(value)
        ref = f"${len(self.values)}"
        return f"{ref}::{cast}" if cast else ref


_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def to_sql(node: Node, layout: Layout, params: _Params) -> str:
    """The JSON filter as SQL; every value a parameter. `$ne`/`$nin`/`$not` keep NULLs (as
    Qdrant's must_not does)."""
    match node:
        case Cond(field=f, op=op, value=v):
            c = layout.column(f)
            sqltype = layout.columns[f][1]
            if op == "$eq":
                return f"{c} IS NULL" if v is None else f"{c} = {params.add(v, sqltype)}"
            if op == "$ne":
                if v is None:
                    return f"{c} IS NOT NULL"
                return f"{c} IS DISTINCT FROM {params.add(v, sqltype)}"
            if op == "$in":
                return f"{c} = ANY({params.add(list(v), sqltype + '[]')})"
            if op == "$nin":
                return f"NOT ({c} = ANY({params.add(list(v), sqltype + '[]')})) IS TRUE"
            return f"{c} {_OPS[op]} {params.add(v, sqltype)}"
        case And(items=items):
            return "(" + " AND ".join(to_sql(i, layout, params) for i in items) + ")"
        case Or(items=items):
            return "(" + " OR ".join(to_sql(i, layout, params) for i in items) + ")"
        case Not(item=item):
            return f"(({to_sql(item, layout, params)}) IS NOT TRUE)"
    raise AssertionError(node)


def where_sql(query: VectorQuery, layout: Layout, params: _Params, link: LinkFilter | None) -> str:
    parts = []
    if query.filter is not None:
        parts.append(to_sql(query.filter, layout, params))
    if query.ids is not None and query.intent != "upsert":
        ids = params.add(list(query.ids), layout.columns[ID][1] + "[]")
        parts.append(f"{quote(ID)} = ANY({ids})")
    if link is not None:
        c = layout.column(link.column)
        values = link_values(link)
        parts.append(f"{c} = ANY({params.add(values, layout.columns[link.column][1] + '[]')})")
    return " WHERE " + " AND ".join(parts) if parts else ""


def _bind(value: Any, typname: str) -> Any:
    """A JSON value for a column: nested values as JSON text for json/jsonb columns."""
    if typname in ("json", "jsonb"):
        return value  # the pool's codec encodes Python values as JSON
    if isinstance(value, dict | list):
        raise InvalidVectorQuery("a nested payload value fits only a json/jsonb column")
    return value


class PgvectorSettings(PostgresSettings, tag="pgvector", frozen=True):
    """A PostgreSQL database with the vector extension (the same fields as postgresql)."""


class PgvectorConnector(PostgresConnector):
    """pgvector tables through the PostgreSQL connector's pool, in the `vector` language."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (PgvectorSettings,)
    language: ClassVar[str] = "vector"
    dialect: ClassVar[str] = "pgvector"

    def __init__(self, config: PgvectorSettings) -> None:
        super().__init__(config)
        self._layouts: dict[str, Layout] = {}
        # per connection: the vector codec is registered / the session's search effort
        self._codec: weakref.WeakSet[Any] = weakref.WeakSet()
        self._effort: weakref.WeakKeyDictionary[Any, Effort] = weakref.WeakKeyDictionary()

    async def _reset(self, conn: Any) -> None:
        if conn not in self._clean:
            self._effort.pop(conn, None)  # RESET ALL follows
        await super()._reset(conn)

    def _split(self, collection: str) -> tuple[str, str]:
        schema, _, table = collection.rpartition(".")
        return schema or "public", table

    async def _layout(self, collection: str, statement: Statement, deadline: float) -> Layout:
        cached = self._layouts.get(collection)
        if cached is not None:
            return cached
        schema, table = self._split(collection)
        pool = self._require_pool()
        async with self._acquire(pool, statement, deadline) as conn:
            with self._errors(statement, deadline):
                vectors = await conn.fetch(VECTOR_COLUMNS_SQL, schema, table)
                cols = await conn.fetch(COLUMNS_SQL, schema, table)
        if not cols:
            raise QueryFailed(self.config.name, f"no table {collection!r}")
        if not vectors:
            raise QueryFailed(self.config.name, f"{collection} has no vector column")
        columns = {r["attname"]: (r["typname"], r["sqltype"]) for r in cols}
        if ID not in columns:
            raise QueryFailed(self.config.name, f"{collection} has no `id` column")
        layout = _make_layout(vectors[0], columns)
        self._layouts[collection] = layout
        return layout

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:  # type: ignore[override]
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        db = self.config.name
        collection = collection_of(statement, db)
        try:
            query = parse(statement.text)
        except InvalidVectorQuery as exc:
            raise QueryRejected(db, exc.message, hint=exc.suggestion) from exc
        if not query.is_read:
            if statement.readonly:
                raise read_only_refusal(db, query.intent)
            n = await self.execute_write(statement)
            yield Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])
            return
        layout = await self._layout(collection, statement, deadline)
        try:
            sql, params, columns, effort = await self._compile_read(query, layout, statement)
        except InvalidVectorQuery as exc:
            raise QueryRejected(db, exc.message, hint=exc.suggestion) from exc
        inner = Statement(
            text=sql,
            params=params,
            timeout=statement.timeout,
            readonly=True,
            max_rows=statement.max_rows,
            batch_size=statement.batch_size,
            bulk=statement.bulk,
        )
        if effort is not None:
            yield Batch(columns, rows=await self._search(inner, effort, deadline))
            return
        sent = False
        async with contextlib.aclosing(super().stream(inner)) as batches:
            async for b in batches:
                sent = True
                yield Batch(columns, rows=b.rows, arrow=_renamed(b, columns))
        if not sent:
            yield Batch(columns, rows=[])

    async def _compile_read(
        self, query: VectorQuery, layout: Layout, statement: Statement
    ) -> tuple[str, list[Any], list[Column], Effort | None]:
        """The SQL, its parameters and columns, and the effort of a search (None otherwise)."""
        params = _Params()
        link: LinkFilter | None = statement.options.get("link")
        names = layout.selected(query)
        scored = query.intent in ("search", "near_text", "hybrid")
        columns = layout.result_columns(names, scored=scored)
        payload = "".join(f", {quote(n)}" for n in names)
        effort: Effort | None = None
        if query.intent == "count":
            where = where_sql(query, layout, params, link)
            sql = f"SELECT count(*) AS count FROM {layout.relation}{where}"
            return sql, params.values, [Column("count", "BIGINT")], effort
        limit = fetch_limit(query, statement)
        if scored:
            vec = await search_vector(query)
            check_dimension(query, vec, layout.dimension)
            op, score, _ = METRIC_SQL[layout.metric]
            distance = f"{quote(layout.vector)} {op} {params.add(vec, 'vector')}"
            where = where_sql(query, layout, params, link)
            sql = (
                f"SELECT {quote(ID)}, {score.format(d=distance)} AS {SCORE}{payload} "
                f"FROM {layout.relation}{where} ORDER BY {distance}"
            )
            effort = (query.ef, query.probes)
        else:
            where = where_sql(query, layout, params, link)
            sql = f"SELECT {quote(ID)}{payload} FROM {layout.relation}{where} ORDER BY {quote(ID)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if query.offset:
            sql += f" OFFSET {int(query.offset)}"
        return sql, params.values, columns, effort

    async def _search(
        self, inner: Statement, effort: Effort, deadline: float
    ) -> list[tuple[Any, ...]]:
        """A search: the codec and the effort set on this connection if they are not yet,
        then the prepared query alone (see the module's docstring)."""
        pool = self._require_pool()
        async with self._acquire(pool, inner, deadline) as conn:
            raw = conn._con  # the connection behind the pool's proxy, as _reset receives it
            with self._errors(inner, deadline):
                if raw not in self._codec:
                    await register_vector_codec(conn)
                    self._codec.add(raw)
                setup = []
                if self._effort.get(raw) != effort:
                    self._effort.pop(raw, None)  # unknown until the SETs are through
                    setup.append(effort_sql(effort))
                timeout_kept = inner.timeout == self._default_timeout
                if not timeout_kept:  # a session setting: the pool's reset puts it back
                    setup.append(_set_timeout(inner.timeout, local=False))
                if setup:
                    await conn.execute("; ".join(setup))
                    self._effort[raw] = effort
                records = await conn.fetch(inner.text, *inner.params)
                if timeout_kept:
                    self._clean.add(raw)
        return [tuple(r) for r in records]

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        db = self.config.name
        collection = collection_of(statement, db)
        try:
            query = parse(statement.text)
            if query.is_read:
                raise InvalidVectorQuery(f"`{query.intent}` is a read; execute_write takes writes")
            if query.intent == "create_collection":
                sql = _create_sql(collection, query, *self._split(collection))
                self._layouts.pop(collection, None)
                return await super().execute_write(_write_statement(statement, sql, []))
            if query.intent == "drop_collection":
                schema, table = self._split(collection)
                self._layouts.pop(collection, None)
                sql = f"DROP TABLE {quote(schema)}.{quote(table)}"
                return await super().execute_write(_write_statement(statement, sql, []))
            layout = await self._layout(collection, statement, deadline)
            sql, params = _write_sql(query, layout)
        except InvalidVectorQuery as exc:
            raise QueryRejected(db, exc.message, hint=exc.suggestion) from exc
        return await super().execute_write(_write_statement(statement, sql, params))

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        pool = self._require_pool()
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        out: list[TableInfo] = []
        async with self._acquire(pool, statement, deadline) as conn:
            with self._errors(statement, deadline):
                vectors = await conn.fetch(VECTOR_COLUMNS_SQL, None, None)
                seen: set[tuple[str, str]] = set()
                for row in vectors:
                    key = (row["nspname"], row["relname"])
                    if key in seen:
                        continue
                    seen.add(key)
                    cols = await conn.fetch(COLUMNS_SQL, *key)
                    columns = {r["attname"]: (r["typname"], r["sqltype"]) for r in cols}
                    name = key[1] if key[0] == "public" else f"{key[0]}.{key[1]}"
                    if ID not in columns:
                        out.append(TableInfo(name=name, fields=[], description="no `id` column"))
                        continue
                    layout = _make_layout(row, columns)
                    self._layouts[name] = layout
                    out.append(await _table_info(conn, name, layout))
        return out

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return link_statement(statement, link)


def _make_layout(row: Any, columns: dict[str, tuple[str, str]]) -> Layout:
    metric = DEFAULT_METRIC
    for indexdef in row["indexes"] or []:
        m = _OPCLASS.search(indexdef)
        if m:
            metric = _OPCLASS_METRIC[m.group(1)]
            break
    return Layout(
        schema=row["nspname"],
        table=row["relname"],
        vector=row["attname"],
        dimension=int(row["atttypmod"]),
        metric=metric,
        columns=columns,
    )


async def _table_info(conn: Any, name: str, layout: Layout) -> TableInfo:
    names = [ID, *layout.payload]
    select = ", ".join(quote(n) for n in names)
    rows = await conn.fetch(f"SELECT {select} FROM {layout.relation} LIMIT {SAMPLE_POINTS}")
    cols = layout.result_columns(layout.payload, scored=False)
    sample = pa.Table.from_batches([rows_to_arrow(cols, [tuple(r) for r in rows])])
    dists = distributions(sample)
    count = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", layout.relation
    )
    if count is None or count < 0:
        count = await conn.fetchval(f"SELECT count(*) FROM {layout.relation}")
    fields = [
        FieldInfo(
            name=c.name,
            data_type=c.type,
            is_primary=c.name == ID,
            distribution=dists.get(c.name),
        )
        for c in cols
    ]
    fields.insert(1, vector_field(layout.vector, layout.dimension, layout.metric))
    return TableInfo(
        name=name,
        fields=fields,
        row_count_estimate=int(count),
        description=f"{layout.dimension}-dimensional vectors, {layout.metric}",
    )


def _renamed(batch: Batch, columns: list[Column]) -> Any:
    if batch.arrow is None:
        return None
    return batch.arrow.rename_columns([c.name for c in columns])


def _write_statement(statement: Statement, sql: str, params: list[Any]) -> Statement:
    return Statement(text=sql, params=params, timeout=statement.timeout, readonly=False)


def _create_sql(collection: str, query: VectorQuery, schema: str, table: str) -> str:
    assert query.dimension is not None and query.metric is not None
    relation = f"{quote(schema)}.{quote(table)}"
    opclass = METRIC_SQL[query.metric][2]
    return (
        f"CREATE TABLE {relation} ({quote(ID)} bigint PRIMARY KEY, "
        f"embedding vector({int(query.dimension)}) NOT NULL); "
        f"CREATE INDEX ON {relation} USING hnsw (embedding {opclass})"
    )


def _write_sql(query: VectorQuery, layout: Layout) -> tuple[str, list[Any]]:
    params = _Params()
    relation = layout.relation
    intent = query.intent
    if intent == "upsert":
        check_points(query, layout.dimension)
        names: dict[str, None] = {}
        for p in query.points:
            names.update(dict.fromkeys(p.payload))
        new = sorted(n for n in names if n not in layout.columns or n == layout.vector)
        if new:
            raise InvalidVectorQuery(
                f"the points set fields that are not columns of {layout.table}: {', '.join(new)}",
                "add the columns with ALTER TABLE (a `postgresql` entry for the same database, "
                f"level A), or use its fields: {', '.join(layout.payload)}",
            )
        fields = [ID, layout.vector, *names]
        arrays = [
            params.add([p.id for p in query.points], layout.columns[ID][1] + "[]"),
            params.add([vector_text(p.vector) for p in query.points], "text[]"),
        ]
        for n in names:
            typname, sqltype = layout.columns[n]
            values = [_bind(p.payload.get(n), typname) for p in query.points]
            arrays.append(params.add(values, sqltype + "[]"))
        aliases = [f"c{i}" for i in range(len(fields))]
        select = ", ".join(f"u.c{i}::vector" if i == 1 else f"u.c{i}" for i in range(len(fields)))
        updates = ", ".join(f"{quote(f)} = EXCLUDED.{quote(f)}" for f in fields[1:])
        sql = (
            f"INSERT INTO {relation} ({', '.join(map(quote, fields))}) "
            f"SELECT {select} FROM unnest({', '.join(arrays)}) AS u({', '.join(aliases)}) "
            f"ON CONFLICT ({quote(ID)}) DO UPDATE SET {updates}"
        )
        return sql, params.values
    if intent == "delete_all":
        return f"DELETE FROM {relation}", []
    if intent == "delete":
        return f"DELETE FROM {relation}{where_sql(query, layout, params, None)}", params.values
    sets = []
    for key, value in query.payload.items():
        c = layout.column(key)
        typname, sqltype = layout.columns[key]
        sets.append(f"{c} = {params.add(_bind(value, typname), sqltype)}")
    where = where_sql(query, layout, params, None)
    return f"UPDATE {relation} SET {', '.join(sets)}{where}", params.values
