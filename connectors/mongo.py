"""MongoDB through PyMongo's native async client (`pymongo.AsyncMongoClient`).

Contract with the engine. `Statement.text` is one JSON object in MongoDB Extended JSON
(relaxed or canonical: `{"$oid": ...}`, `{"$date": ...}`, `{"$numberDecimal": ...}`,
`{"$numberLong": ...}`, `{"$uuid": ...}`), already checked and rewritten by the safety
pipeline. **The collection is `Statement.options["collection"]`** - the engine passes the
step's `table` there (engine/statements.py), so the collection that runs is the one the
policy checked; a `"collection"` key in the body is only a fallback when the option is absent.

    reads  (stream):  {"operation": "find" | "findOne" | "aggregate" | "count" | "distinct",
                       "filter", "projection", "sort", "limit", "skip", "pipeline", "key",
                       "maxTimeMS", "hint", "collation", "comment", "allowDiskUse"}
    writes (execute_write): insertOne {"document"}, insertMany {"documents"},
                       updateOne/updateMany {"filter", "update", "upsert"},
                       replaceOne {"filter", "replacement", "upsert"},
                       deleteOne/deleteMany {"filter"}  -> documents inserted/modified/deleted

`sort` is `{"a": 1, "b": -1}` or `[["a", 1], ["b", -1]]`. An unknown operation or key is a
QueryFailed naming the allowed ones. A write in `stream()` needs `readonly=False` (then it
yields one row `rows_affected`); `$out`/`$merge` stages are refused on a read-only statement.

Results. Documents become rows as `connectors.mongo_flatten` describes (top-level fields as
columns, the union of the fields seen, stable order and types across batches; nested values
as JSON). `count` -> one row `count`; `distinct` -> one column named after the key, a row per
value; `findOne` -> zero or one row. A read with no documents has the columns of an inclusion
projection (`_id` first unless excluded), or none; an empty `distinct` keeps its key column.

Links. `with_link` adds `{column: {"$in": values}}` to the filter (in `$and` with a non-empty
one) or as a leading `$match`; values become BSON values (rules in `mongo_query.link_values`).

Time limits. `maxTimeMS` is sent with every read: the lower of the body's `maxTimeMS` and
`Statement.timeout`; writes run under `pymongo.timeout(Statement.timeout)`. A client-side
deadline one second later backs it up against a server that ignores `maxTimeMS`. Both surface
as QueryTimedOut.

Cancellation. A cursor is closed when the stream ends for any reason (exhausted, `max_rows`
reached, consumer stopped, cancelled): `close()` runs shielded and sends `killCursors`, so the
server stops too. An operation cancelled mid-flight makes PyMongo discard that connection.

Writes are not transactional: a MongoDB transaction needs a replica set, and the write
commands here are single operations (insertMany is `ordered`: it stops at the first error,
documents before it stay inserted).

Bulk path (`Statement.bulk`): Arrow record batches typed exactly like the row path. A find
cursor hands over each server reply as raw BSON (`find_raw_batches`), decoded and flattened in
a worker thread; aggregate documents are shaped there too. Measured on 200k documents (8
fields, two nested; client CPU only, from the same raw bytes): bson decode 1.40 s, decode +
flatten to rows 3.90 s, to Arrow 2.66 s; pymongoarrow 1.15 0.28 s. pymongoarrow is not used:
its schema inference takes a field's type from the first value and silently loses the rest
(a later "two" in an int32 column becomes null, 3.5 is truncated to 3, an array in a field
first seen as a document becomes an empty struct), it has no async API, and its wheels are
built against an older pyarrow ABI (a RuntimeWarning per class on import with pyarrow 25).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

import anyio
import bson
import pymongo
from bson import DatetimeConversion, Int64
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.cursor import AsyncRawBatchCursor
from pymongo.errors import ConfigurationError, PyMongoError

from connectors import mongo_discovery
from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, ServerSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.mongo_errors import mapped, reason
from connectors.mongo_flatten import RowShaper
from connectors.mongo_query import MongoQuery, apply_link, parse, write_stages

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from connectors.config import DatabaseConfig

DEFAULT_TIMEOUT_S = 30.0
# the client-side deadline trails the server's maxTimeMS so the server stops first
CLIENT_GRACE_S = 1.0
CLOSE_CURSOR_S = 5.0
# how documents are decoded: the client's options and the bulk path's raw batches alike
DECODE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    tzinfo=dt.UTC,
    uuid_representation=UuidRepresentation.STANDARD,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


class MongoSettings(ServerSettings, tag="mongodb", frozen=True):
    """A MongoDB server (`dsn` is a mongodb:// URI)."""


class MongoConnector:
    """MongoDB through `pymongo.AsyncMongoClient` (one long-lived client per database)."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (MongoSettings,)
    language: ClassVar[str] = "mql"
    dialect: ClassVar[str] = "mql"

    def __init__(self, config: MongoSettings) -> None:
        self.config = config
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S
        # collection -> top-level fields seen holding ObjectIds (discovery and reads)
        self._objectid_fields: dict[str, frozenset[str]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of the AsyncMongoClient (without the host)."""
        c = self.config
        ms = max(1, int(c.connect_timeout_seconds * 1000))
        opts: dict[str, Any] = {
            "serverSelectionTimeoutMS": ms,
            "connectTimeoutMS": ms,
            "maxPoolSize": c.pool_size,
            "appname": "sluice",
            # datetimes come back aware in UTC; out-of-range dates as DatetimeMS, not errors
            "tz_aware": True,
            "tzinfo": dt.UTC,
            "datetime_conversion": "DATETIME_AUTO",
            "uuidRepresentation": "standard",
        }
        if not c.dsn:
            opts["host"] = c.host or "127.0.0.1"
            opts["port"] = c.port or 27017
            if c.user:
                opts["username"] = c.user
                opts["password"] = c.password or ""
        return opts

    async def open(self) -> None:
        if self._client is not None:
            return
        c = self.config
        # checked before a client exists: closing a client whose monitor is mid-handshake
        # leaves PyMongo's socket to the garbage collector
        name = c.database or _dsn_database(c.dsn)
        if not name:
            raise ConnectorUnavailable(
                c.name, "no database: set `database`, or name it in the dsn (mongodb://h/db)"
            )
        try:
            client: AsyncMongoClient[dict[str, Any]] = (
                AsyncMongoClient(c.dsn, **self.client_options())
                if c.dsn
                else AsyncMongoClient(**self.client_options())
            )
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise ConnectorUnavailable(c.name, f"invalid MongoDB settings: {exc}") from exc
        self._client, self._db = client, client[name]
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await client.close()

    def _database(self) -> AsyncDatabase[dict[str, Any]]:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._db

    async def ping(self) -> None:
        db = self._database()
        seconds = self.config.connect_timeout_seconds
        try:
            with anyio.fail_after(seconds + CLIENT_GRACE_S):
                await db.command("ping")
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except PyMongoError as exc:
            raise ConnectorUnavailable(self.config.name, f"unreachable: {reason(exc)}") from exc

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncGenerator[Batch, None]:
        db_name = self.config.name
        query = parse(statement, db_name)
        coll = self._database()[query.collection]
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        if query.is_write:
            if statement.readonly:
                raise QueryFailed(
                    db_name,
                    f"`{query.operation}` writes; this statement is read-only",
                    suggestion="writes need a write grant (W/RW) in the permissions",
                )
            n = await self._write(coll, query, statement, deadline)
            yield Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])
            return
        if statement.readonly and (stages := write_stages(query.pipeline)):
            raise QueryFailed(db_name, f"{', '.join(stages)} writes; this statement is read-only")
        shaper = RowShaper()
        make = shaper.arrow if statement.bulk else shaper.rows
        max_time_ms = self._max_time_ms(query, statement)
        match query.operation:
            case "count":
                with self._errors(statement, deadline):
                    n = await coll.count_documents(
                        query.filter, maxTimeMS=max_time_ms, **_count_args(query)
                    )
                yield make([{"count": n}])
            case "distinct":
                assert query.key is not None
                with self._errors(statement, deadline):
                    values = await coll.distinct(
                        query.key, query.filter, maxTimeMS=max_time_ms, **query.options()
                    )
                if statement.max_rows is not None:
                    values = values[: statement.max_rows]
                if not values:
                    yield Batch([Column(query.key, "VARCHAR")], rows=[])
                step = max(1, statement.batch_size)
                for at in range(0, len(values), step):
                    yield make([{query.key: v} for v in values[at : at + step]])
            case "findOne":
                with self._errors(statement, deadline):
                    doc = await coll.find_one(
                        query.filter,
                        query.projection,
                        sort=query.sort,
                        skip=query.skip or 0,
                        max_time_ms=max_time_ms,
                        **query.options(),
                    )
                if doc is None:
                    yield Batch(_projected_columns(query.projection), rows=[])
                else:
                    batch = make([doc])
                    self._note_objectids(query.collection, shaper)
                    yield batch
            case _:
                # aclosing: a consumer that stops early closes the cursor now, not at GC
                cursor_batches = self._stream_cursor(coll, query, statement, deadline, shaper)
                async with contextlib.aclosing(cursor_batches) as batches:
                    async for batch in batches:
                        yield batch

    async def _stream_cursor(
        self,
        coll: AsyncCollection[dict[str, Any]],
        query: MongoQuery,
        statement: Statement,
        deadline: float,
        shaper: RowShaper,
    ) -> AsyncGenerator[Batch, None]:
        batch_size = max(1, statement.batch_size)
        limit = statement.max_rows
        raw = statement.bulk and query.operation == "find"
        cursor: Any = None
        # a fetch interrupted by cancellation or an error: PyMongo's own cleanup inside the
        # cancelled operation cannot reach the server, so the cursor is killed explicitly
        cut_short = False
        try:
            with self._errors(statement, deadline):
                cursor = await self._open_cursor(coll, query, statement, batch_size)
            sent = 0
            while limit is None or sent < limit:
                want = batch_size if limit is None else min(batch_size, limit - sent)
                try:
                    batch, got = await self._fetch(cursor, shaper, statement, deadline, want)
                except BaseException:
                    cut_short = True
                    raise
                if batch is None:
                    break
                if sent == 0:
                    self._note_objectids(query.collection, shaper)
                sent += got
                yield batch
                # raw batches come as the server sends them; a short one is not the last
                if got < want and not raw:
                    break
            if sent == 0:
                yield Batch(_projected_columns(query.projection), rows=[])
        finally:
            if cursor is not None:
                await _close_cursor(cursor, coll if cut_short else None)

    async def _fetch(
        self, cursor: Any, shaper: RowShaper, statement: Statement, deadline: float, want: int
    ) -> tuple[Batch | None, int]:
        """The next batch of at most `want` documents (None at the end) and its size.

        On the bulk path nothing is shaped on the event loop: a find cursor hands over raw
        BSON that `bson.decode_all` and the shaper turn into Arrow in a worker thread; an
        aggregate cursor's documents are shaped there.
        """
        with self._errors(statement, deadline):
            if statement.bulk and isinstance(cursor, AsyncRawBatchCursor):
                try:
                    data = await cursor.next()
                except StopAsyncIteration:
                    return None, 0
                batch = await anyio.to_thread.run_sync(_decode_batch, data, shaper, want)
                return batch, len(batch) if batch is not None else 0
            docs = await cursor.to_list(want)
            if not docs:
                return None, 0
            if statement.bulk:
                return await anyio.to_thread.run_sync(shaper.arrow, docs), len(docs)
            return shaper.rows(docs), len(docs)

    async def _open_cursor(
        self,
        coll: AsyncCollection[dict[str, Any]],
        query: MongoQuery,
        statement: Statement,
        batch_size: int,
    ) -> Any:
        """A find/aggregate cursor; raw BSON batches on the bulk path (decoded off the loop)."""
        max_time_ms = self._max_time_ms(query, statement)
        if query.operation == "aggregate":
            extra = query.options()
            if "allowDiskUse" in query.body:
                extra["allowDiskUse"] = bool(query.body["allowDiskUse"])
            # decoded even on the bulk path: aggregate_raw_batches trips an assertion in the
            # driver on servers that inline the first batch (nx-27017); only the shaping moves
            # to the worker thread then
            return await coll.aggregate(
                query.pipeline, batchSize=batch_size, maxTimeMS=max_time_ms, **extra
            )
        find = coll.find_raw_batches if statement.bulk else coll.find
        return find(
            query.filter,
            query.projection,
            sort=query.sort,
            skip=query.skip or 0,
            limit=_find_limit(query.limit, statement.max_rows),
            batch_size=batch_size,
            max_time_ms=max_time_ms,
            **query.options(),
        )

    def _max_time_ms(self, query: MongoQuery, statement: Statement) -> int:
        ms = max(1, int(statement.timeout * 1000))
        return min(ms, query.max_time_ms) if query.max_time_ms else ms

    def _note_objectids(self, collection: str, shaper: RowShaper) -> None:
        """Remember the fields holding ObjectIds, for the link filter's ObjectId rule."""
        found = shaper.objectid_columns
        known = self._objectid_fields.get(collection, frozenset())
        if not found <= known:
            self._objectid_fields[collection] = known | found

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        """Map PyMongo errors (and the client-side deadline) onto connector errors."""
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except PyMongoError as exc:
                raise mapped(db, exc, statement.timeout) from exc
            except (BSONError, ValueError, TypeError) as exc:
                # the driver validates arguments (sort spec, hint, documents) before sending
                raise QueryFailed(db, f"invalid MQL: {exc}") from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        query = parse(statement, self.config.name)
        if not query.is_write:
            raise QueryFailed(
                self.config.name, f"`{query.operation}` is a read; execute_write takes writes"
            )
        coll = self._database()[query.collection]
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        return await self._write(coll, query, statement, deadline)

    async def _write(
        self,
        coll: AsyncCollection[dict[str, Any]],
        query: MongoQuery,
        statement: Statement,
        deadline: float,
    ) -> int:
        body, extra = query.body, query.options()
        upsert = bool(body.get("upsert", False))
        with self._errors(statement, deadline), pymongo.timeout(statement.timeout):
            match query.operation:
                case "insertOne":
                    await coll.insert_one(body["document"], comment=body.get("comment"))
                    return 1
                case "insertMany":
                    result = await coll.insert_many(
                        body["documents"], ordered=True, comment=body.get("comment")
                    )
                    return len(result.inserted_ids)
                case "updateOne" | "updateMany":
                    fn = coll.update_one if query.operation == "updateOne" else coll.update_many
                    res = await fn(query.filter, body["update"], upsert=upsert, **extra)
                    return res.modified_count + (res.upserted_id is not None)
                case "replaceOne":
                    res = await coll.replace_one(
                        query.filter, body["replacement"], upsert=upsert, **extra
                    )
                    return res.modified_count + (res.upserted_id is not None)
                case "deleteOne" | "deleteMany":
                    remove = coll.delete_one if query.operation == "deleteOne" else coll.delete_many
                    deleted = await remove(query.filter, **extra)
                    return int(deleted.deleted_count)
        raise AssertionError(query.operation)  # parse() allows only the cases above

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        db = self._database()
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        with self._errors(statement, deadline):
            tables, oid_fields = await mongo_discovery.discover(db)
        self._objectid_fields.update(oid_fields)
        return tables

    def pool_stats(self) -> PoolStats | None:
        return None  # pymongo keeps its pool private; /metrics counts query slots instead

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        collection = statement.options.get("collection")
        oid_fields = self._objectid_fields.get(collection, frozenset()) if collection else None
        return apply_link(statement, link, self.config.name, oid_fields or frozenset())


def _dsn_database(dsn: str | None) -> str | None:
    """The database named in a mongodb:// or mongodb+srv:// URI's path, if any."""
    if not dsn:
        return None
    path = urlsplit(dsn).path.lstrip("/")
    return unquote(path) or None


def _find_limit(body_limit: int | None, max_rows: int | None) -> int:
    """find's limit: the lower of the body's (0 = none) and the fetch cap."""
    limits = [n for n in (body_limit, max_rows) if n]
    return min(limits) if limits else 0


def _count_args(query: MongoQuery) -> dict[str, Any]:
    args = query.options()
    if query.skip:
        args["skip"] = query.skip
    if query.limit:
        args["limit"] = query.limit
    return args


def _projected_columns(projection: Mapping[str, Any] | None) -> list[Column]:
    """Columns of an empty result, when an inclusion projection names them."""
    if not projection:
        return []
    included = [k for k, v in projection.items() if v not in (0, False) and k != "_id"]
    if not included:
        return []
    with_id = projection.get("_id", 1) not in (0, False)
    names = (["_id"] if with_id else []) + included
    return [Column(n, "VARCHAR") for n in names]


def _decode_batch(data: bytes, shaper: RowShaper, want: int) -> Batch | None:
    docs = bson.decode_all(data, DECODE_OPTIONS)
    return shaper.arrow(docs[:want]) if docs else None


async def _close_cursor(cursor: Any, coll: AsyncCollection[dict[str, Any]] | None) -> None:
    """Kill the cursor on the server, even while the caller is being cancelled.

    `coll` is given when a fetch was interrupted: PyMongo then marks the cursor closed
    although its killCursors (sent from inside the cancelled operation) never left, so the
    command is sent here; a cursor the server already dropped is simply not found.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_CURSOR_S):
        with contextlib.suppress(PyMongoError, OSError):
            cursor_id = cursor.cursor_id
            await cursor.close()
            if coll is not None and cursor_id:
                await coll.database.command("killCursors", coll.name, cursors=[Int64(cursor_id)])
