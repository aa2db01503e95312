"""Qdrant through `qdrant-client`: a server (`dsn: http://host:6333`, or host/port, and
`api_key`) or the client's embedded local mode (`path: ./folder`, or
`path: ":memory:"`).

    databases:
      - name: memories
        type: qdrant
        path: ./qdrant-data

A server is driven by `AsyncQdrantClient` (cancellation closes the request, Qdrant's own
`timeout` is sent with every call). The local mode is pure Python over numpy: its calls are
CPU work, so they run on a synchronous client in worker threads and the event loop only
waits. Reads run side by side, one per core (the local store's reads change nothing, and
numpy releases the GIL while it scores); a write runs alone, once every read has finished
(writes change the store's arrays in place).

Bodies are the `vector` language (connectors/vector_query.py), compiled to Qdrant's typed
filter models (never text): equality -> `MatchValue` (`HasIdCondition` on `id`), `$in` ->
`MatchAny`, ranges -> `Range`, null -> `IsNullCondition`, `$and`/`$or`/`$not` ->
must/should/must_not. A link is a `MatchAny` (or `HasIdCondition` on `id`) in `must`, next
to the body's filter.

Rows: `id`, `score` (Qdrant's: cosine similarity, dot product, euclidean distance), then
the payload's top-level fields flattened as MongoDB documents are (connectors/mongo_flatten:
the union of fields seen, stable types across batches, nested values as JSON). A payload key
named `id` or `score` comes out as `payload_id`/`payload_score`.

Writes report the points they touched: upsert counts its points; delete and set_payload count
the matching points just before the change (Qdrant's update result has no count).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import msgspec
import pyarrow as pa

from connectors.base import (
    Batch,
    Column,
    FieldInfo,
    LinkFilter,
    PoolStats,
    Statement,
    TableInfo,
)
from connectors.config import DatabaseConfig, ServerSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut
from connectors.mongo_flatten import RowShaper
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

if TYPE_CHECKING:
    from qdrant_client.http import models as qm

DEFAULT_TIMEOUT_S = 30.0
CLIENT_GRACE_S = 1.0
LAYOUT_CACHE_SIZE = 1024
_METRICS = {"Cosine": "cosine", "Dot": "dot", "Euclid": "l2", "Manhattan": "manhattan"}
_DISTANCES = {"cosine": "Cosine", "dot": "Dot", "l2": "Euclid"}


class Layout:
    """A collection's vector: its name (None for the unnamed one), dimension and metric."""

    __slots__ = ("dimension", "metric", "using")

    def __init__(self, using: str | None, dimension: int, metric: str) -> None:
        self.using = using
        self.dimension = dimension
        self.metric = metric


def _layout(info: qm.CollectionInfo) -> Layout:
    vectors = info.config.params.vectors
    if vectors is None:
        raise InvalidVectorQuery("the collection has no dense vectors")
    if isinstance(vectors, dict):
        if not vectors:
            raise InvalidVectorQuery("the collection has no dense vectors")
        using, params = next(iter(vectors.items()))
    else:
        using, params = None, vectors
    distance = getattr(params.distance, "value", str(params.distance))
    return Layout(using, int(params.size), _METRICS.get(distance, str(distance).lower()))


# -- filters ---------------------------------------------------------------------------------


def _point_id(value: Any) -> int | str:
    """Qdrant ids are unsigned integers or UUIDs; anything else cannot match a point."""
    if isinstance(value, bool):
        raise InvalidVectorQuery(f"{value!r} is not a Qdrant point id")
    if isinstance(value, int):
        if value < 0:
            raise InvalidVectorQuery(f"{value} is not a Qdrant point id (unsigned integers)")
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidVectorQuery(
            f"{value!r} is not a Qdrant point id", "ids are unsigned integers or UUIDs"
        ) from None


def _match_values(values: list[Any], where: str) -> list[Any]:
    if all(isinstance(v, str) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return values
    raise InvalidVectorQuery(
        f"{where}: Qdrant matches lists of strings or of integers, not mixed or other values"
    )


def to_filter(node: Node) -> qm.Filter:
    from qdrant_client.http import models as qm

    def cond(node: Node) -> Any:
        match node:
            case Cond(field=f, op=op, value=v):
                return _condition(f, op, v)
            case And(items=items):
                return qm.Filter(must=[cond(i) for i in items])
            case Or(items=items):
                return qm.Filter(should=[cond(i) for i in items])
            case Not(item=item):
                return qm.Filter(must_not=[cond(item)])
        raise AssertionError(node)

    top = cond(node)
    return top if isinstance(top, qm.Filter) else qm.Filter(must=[top])


def _condition(field: str, op: str, value: Any) -> Any:
    from qdrant_client.http import models as qm

    def negate(c: Any) -> Any:
        return qm.Filter(must_not=[c])

    if field == ID:
        if op in ("$eq", "$ne", "$in", "$nin"):
            ids = list(value) if op in ("$in", "$nin") else [value]
            has: Any = qm.HasIdCondition(has_id=[_point_id(v) for v in ids])
            return has if op in ("$eq", "$in") else negate(has)
        raise InvalidVectorQuery("`id` supports $eq, $ne, $in and $nin in Qdrant")
    c: Any
    if op in ("$eq", "$ne"):
        if value is None:
            c = qm.IsNullCondition(is_null=qm.PayloadField(key=field))
        elif isinstance(value, float) and not value.is_integer():
            c = qm.FieldCondition(key=field, range=qm.Range(gte=value, lte=value))
        else:
            if isinstance(value, float):
                value = int(value)
            c = qm.FieldCondition(key=field, match=qm.MatchValue(value=value))
        return c if op == "$eq" else negate(c)
    if op in ("$in", "$nin"):
        c = qm.FieldCondition(key=field, match=qm.MatchAny(any=_match_values(list(value), field)))
        return c if op == "$in" else negate(c)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidVectorQuery(f"{field} {op}: Qdrant ranges compare numbers")
    bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[op]
    return qm.FieldCondition(key=field, range=qm.Range(**{bound: value}))


def combined_filter(query: VectorQuery, link: LinkFilter | None) -> qm.Filter | None:
    from qdrant_client.http import models as qm

    must: list[Any] = []
    if query.filter is not None:
        must.append(to_filter(query.filter))
    if query.ids is not None and query.intent in ("set_payload", "update", "delete", "count"):
        must.append(qm.HasIdCondition(has_id=[_point_id(v) for v in query.ids]))
    if link is not None:
        values = link_values(link)
        if link.column == ID:
            ids: list[Any] = []
            for v in values:
                with contextlib.suppress(InvalidVectorQuery):
                    ids.append(_point_id(v))
            must.append(qm.HasIdCondition(has_id=ids))
        else:
            must.append(
                qm.FieldCondition(
                    key=link.column, match=qm.MatchAny(any=_match_values(values, link.column))
                )
            )
    if not must:
        return None
    return must[0] if len(must) == 1 and isinstance(must[0], qm.Filter) else qm.Filter(must=must)


def _doc(point: Any, scored: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {ID: point.id}
    if scored:
        doc[SCORE] = float(point.score)
    for key, value in (point.payload or {}).items():
        doc[f"payload_{key}" if key in (ID, SCORE) else key] = value
    return doc


# -- the connector ---------------------------------------------------------------------------


class QdrantSettings(ServerSettings, tag="qdrant", frozen=True):
    """A Qdrant server (`dsn` is its URL, or host/port; `api_key`) or the embedded local mode
    (`path`: a folder, or ":memory:")."""

    path: str | None = None
    api_key: str | None = None

    @property
    def display_database(self) -> str:
        return self.path or super().display_database

    def problem(self) -> str | None:
        server = self.dsn or self.host or self.port
        if self.path and server:
            return "give a server (`dsn` or `host`/`port`) or a local `path`, not both"
        if not self.path and not server:
            return "a qdrant database needs a server (`dsn` or `host`) or a local `path`"
        return super().problem()

    def secrets(self) -> tuple[str, ...]:
        return (*super().secrets(), *([self.api_key] if self.api_key else []))

    def resolved(self, base: Path) -> DatabaseConfig:
        if not self.path or self.path == ":memory:" or os.path.isabs(self.path):
            return self
        return msgspec.structs.replace(self, path=str((base / self.path).resolve()))


# the client's calls that only read a local store (every other call writes)
LOCAL_READS = frozenset(
    {
        "get_collections",
        "get_collection",
        "collection_exists",
        "query_points",
        "retrieve",
        "scroll",
        "count",
    }
)


class QdrantConnector:
    """A Qdrant server (async client) or the embedded local mode (sync client in a thread)."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (QdrantSettings,)
    language: ClassVar[str] = "vector"
    dialect: ClassVar[str] = "qdrant"

    def __init__(self, config: QdrantSettings) -> None:
        self.config = config
        self._client: Any = None
        self._local = bool(config.path)
        # local mode: one token per concurrent read; a write holds them all (_exclusive)
        readers = (os.cpu_count() or 2) if self._local else config.pool_size
        self._limiter = anyio.CapacityLimiter(readers)
        self._write_lock = anyio.Lock()
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S
        # local mode: layouts by collection (see _collection_layout)
        self._layouts: dict[str, Layout] = {}

    async def open(self) -> None:
        if self._client is not None:
            return
        c = self.config
        # importing qdrant_client takes seconds (pydantic models): never on the event loop
        await anyio.to_thread.run_sync(importlib.import_module, "qdrant_client")
        try:
            if self._local:
                from qdrant_client import QdrantClient

                location = {"location": ":memory:"} if c.path == ":memory:" else {"path": c.path}
                self._client = await anyio.to_thread.run_sync(
                    lambda: QdrantClient(**location, force_disable_check_same_thread=True)
                )
            else:
                from qdrant_client import AsyncQdrantClient

                url = c.dsn or f"http://{c.host or '127.0.0.1'}:{c.port or 6333}"
                self._client = AsyncQdrantClient(
                    url=url,
                    api_key=c.api_key,
                    timeout=int(max(1, c.connect_timeout_seconds)),
                    check_compatibility=False,
                )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConnectorUnavailable(c.name, f"cannot open Qdrant: {exc}") from exc
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            if self._local:
                await anyio.to_thread.run_sync(client.close)
            else:
                await client.close()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """One client call: awaited on a server, in a worker thread in local mode."""
        if self._client is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        fn: Callable[..., Any] = getattr(self._client, method)
        if not self._local:
            return await fn(**kwargs)
        if method in LOCAL_READS:
            return await anyio.to_thread.run_sync(lambda: fn(**kwargs), limiter=self._limiter)
        async with self._exclusive():
            return await anyio.to_thread.run_sync(lambda: fn(**kwargs))

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Every read token, so a local-mode write runs alone. Writers queue on a lock
        first, so two never hold part of the tokens each; the limiter is fair, so reads
        that arrive after a waiting write wait for it."""
        async with self._write_lock:
            borrowers: list[object] = []
            try:
                for _ in range(int(self._limiter.total_tokens)):
                    borrower = object()
                    await self._limiter.acquire_on_behalf_of(borrower)
                    borrowers.append(borrower)
                yield
            finally:
                for borrower in borrowers:
                    self._limiter.release_on_behalf_of(borrower)

    async def ping(self) -> None:
        try:
            with anyio.fail_after(self.config.connect_timeout_seconds + CLIENT_GRACE_S):
                await self._call("get_collections")
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except Exception as exc:  # the client raises transport errors of several libraries
            if isinstance(exc, ConnectorUnavailable):
                raise
            raise ConnectorUnavailable(self.config.name, f"unreachable: {exc}") from exc

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except InvalidVectorQuery as exc:
                raise QueryRejected(db, exc.message, hint=exc.suggestion) from exc
            except (ConnectorUnavailable, QueryFailed, QueryTimedOut):
                raise
            except Exception as exc:  # qdrant-client raises httpx/grpc/pydantic/ValueError
                text = str(exc).strip().splitlines()
                message = text[0][:500] if text else type(exc).__name__
                if "timed out" in message.lower():
                    raise QueryTimedOut(db, statement.timeout) from exc
                raise QueryFailed(db, message) from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    async def _collection_layout(self, collection: str) -> Layout:
        """The collection's vector layout. In local mode it is kept: the folder is locked to
        this process, so only this connector's own create/drop can change it (and they drop
        it), and each search saves a worker-thread hop. A server's collections can be
        recreated by anyone: asked every time."""
        cached = self._layouts.get(collection)
        if cached is not None:
            return cached
        try:
            info = await self._call("get_collection", collection_name=collection)
        except (ValueError, KeyError) as exc:
            raise QueryFailed(self.config.name, f"no collection {collection!r}") from exc
        layout = _layout(info)
        if self._local:
            if len(self._layouts) >= LAYOUT_CACHE_SIZE:
                self._layouts.clear()
            self._layouts[collection] = layout
        return layout

    def _server_timeout(self, statement: Statement) -> dict[str, Any]:
        return {} if self._local else {"timeout": max(1, int(statement.timeout))}

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        collection = collection_of(statement, self.config.name)
        link: LinkFilter | None = statement.options.get("link")
        with self._errors(statement, deadline):
            query = parse(statement.text)
            if not query.is_read:
                if statement.readonly:
                    raise read_only_refusal(self.config.name, query.intent)
                n = await self._write(collection, query, statement)
                result = [Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])]
            else:
                result = await self._read(collection, query, statement, link)
        sent = 0
        for batch in result:
            sent += 1
            yield batch

    async def _read(
        self,
        collection: str,
        query: VectorQuery,
        statement: Statement,
        link: LinkFilter | None,
    ) -> list[Batch]:
        qfilter = combined_filter(query, link)
        timeout = self._server_timeout(statement)
        if query.intent == "count":
            res = await self._call(
                "count", collection_name=collection, count_filter=qfilter, exact=True, **timeout
            )
            return [Batch([Column("count", "BIGINT")], rows=[(int(res.count),)])]
        shaper = RowShaper()
        make = shaper.arrow if statement.bulk else shaper.rows
        limit = fetch_limit(query, statement)
        wp: Any = query.with_payload
        if isinstance(wp, tuple):
            wp = list(wp)
        scored = query.intent in ("search", "near_text", "hybrid")
        empty = [Column(ID, "BIGINT")] + ([Column(SCORE, "DOUBLE")] if scored else [])
        if scored:
            from qdrant_client.http import models as qm

            layout = await self._collection_layout(collection)
            vec = await search_vector(query)
            check_dimension(query, vec, layout.dimension)
            params = qm.SearchParams(hnsw_ef=query.ef) if query.ef else None
            res = await self._call(
                "query_points",
                collection_name=collection,
                query=list(vec),
                using=layout.using,
                query_filter=qfilter,
                search_params=params,
                limit=limit or 10,
                offset=query.offset or None,
                with_payload=wp,
                **timeout,
            )
            docs = [_doc(p, True) for p in res.points]
            return [make(docs)] if docs else [Batch(empty, rows=[])]
        if query.intent == "fetch":
            assert query.ids is not None
            ids = []
            for v in query.ids:
                with contextlib.suppress(InvalidVectorQuery):
                    ids.append(_point_id(v))
            points = await self._call(
                "retrieve", collection_name=collection, ids=ids, with_payload=wp, **timeout
            )
            if link is not None or query.filter is not None:
                # retrieve takes no filter: fetch = scroll over the ids and the filter
                keep = await self._scroll_ids(collection, query, link, [p.id for p in points])
                points = [p for p in points if p.id in keep]
            docs = [_doc(p, False) for p in points][: limit or None]
            return [make(docs)] if docs else [Batch(empty, rows=[])]
        # scroll: pages of batch_size, skipping `offset` points first
        out: list[Batch] = []
        skip, sent, cursor = query.offset, 0, None
        while limit is None or sent < limit:
            page = max(1, statement.batch_size)
            if limit is not None:
                page = min(page, limit - sent + skip)
            points, cursor = await self._call(
                "scroll",
                collection_name=collection,
                scroll_filter=qfilter,
                limit=page,
                offset=cursor,
                with_payload=wp,
                **timeout,
            )
            if skip:
                dropped = min(skip, len(points))
                points, skip = points[dropped:], skip - dropped
            if limit is not None:
                points = points[: limit - sent]
            if points:
                sent += len(points)
                out.append(make([_doc(p, False) for p in points]))
            if cursor is None:
                break
        return out or [Batch(empty, rows=[])]

    async def _scroll_ids(
        self, collection: str, query: VectorQuery, link: LinkFilter | None, ids: list[Any]
    ) -> set[Any]:
        from qdrant_client.http import models as qm

        base = combined_filter(query, link)
        must: list[Any] = [qm.HasIdCondition(has_id=ids)]
        if base is not None:
            must.append(base)
        points, _ = await self._call(
            "scroll",
            collection_name=collection,
            scroll_filter=qm.Filter(must=must),
            limit=max(1, len(ids)),
            with_payload=False,
        )
        return {p.id for p in points}

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
        from qdrant_client.http import models as qm

        timeout = self._server_timeout(statement)
        intent = query.intent
        if intent in ("create_collection", "drop_collection"):
            self._layouts.pop(collection, None)
        if intent == "create_collection":
            assert query.dimension is not None and query.metric is not None
            distance = qm.Distance(_DISTANCES[query.metric])
            if await self._call("collection_exists", collection_name=collection):
                raise InvalidVectorQuery(f"collection {collection!r} exists")
            await self._call(
                "create_collection",
                collection_name=collection,
                vectors_config=qm.VectorParams(size=query.dimension, distance=distance),
            )
            return 0
        if intent == "drop_collection":
            await self._call("delete_collection", collection_name=collection)
            return 0
        layout = await self._collection_layout(collection)
        if intent == "upsert":
            check_points(query, layout.dimension)
            structs = [
                qm.PointStruct(
                    id=_point_id(p.id),
                    vector={layout.using: list(p.vector)} if layout.using else list(p.vector),
                    payload=p.payload,
                )
                for p in query.points
            ]
            await self._call(
                "upsert", collection_name=collection, points=structs, wait=True, **timeout
            )
            return len(structs)
        selector: Any
        if query.ids is not None and intent != "delete_all":
            selector = qm.PointIdsList(points=[_point_id(v) for v in query.ids])
            counted = combined_filter(query, None)
        else:
            counted = None if intent == "delete_all" else combined_filter(query, None)
            selector = qm.FilterSelector(filter=counted or qm.Filter())
        res = await self._call(
            "count", collection_name=collection, count_filter=counted, exact=True, **timeout
        )
        if intent in ("delete", "delete_all"):
            await self._call(
                "delete", collection_name=collection, points_selector=selector, wait=True, **timeout
            )
        else:
            await self._call(
                "set_payload",
                collection_name=collection,
                payload=query.payload,
                points=selector,
                wait=True,
                **timeout,
            )
        return int(res.count)

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        out = []
        with self._errors(statement, deadline):
            names = sorted(c.name for c in (await self._call("get_collections")).collections)
            for name in names:
                info = await self._call("get_collection", collection_name=name)
                try:
                    layout = _layout(info)
                except InvalidVectorQuery as exc:
                    note = f"not a dense vector collection: {exc.message}"
                    out.append(TableInfo(name=name, fields=[], description=note))
                    continue
                points, _ = await self._call(
                    "scroll", collection_name=name, limit=SAMPLE_POINTS, with_payload=True
                )
                shaper = RowShaper()
                sample = shaper.arrow([_doc(p, False) for p in points]) if points else None
                fields = [FieldInfo(name=ID, data_type="BIGINT", nullable=False, is_primary=True)]
                vname = layout.using or "vector"
                fields.append(vector_field(vname, layout.dimension, layout.metric))
                if sample is not None and sample.arrow is not None:
                    table = pa.Table.from_batches([sample.arrow])
                    dists = distributions(table)
                    for col in sample.columns:
                        if col.name == ID:
                            fields[0] = FieldInfo(
                                name=ID,
                                data_type=col.type,
                                nullable=False,
                                is_primary=True,
                                distribution=dists.get(ID),
                            )
                            continue
                        fields.append(
                            FieldInfo(
                                name=col.name, data_type=col.type, distribution=dists.get(col.name)
                            )  # fmt: skip
                        )
                out.append(
                    TableInfo(
                        name=name,
                        fields=fields,
                        row_count_estimate=info.points_count,
                        description=f"{layout.dimension}-dimensional vectors, {layout.metric}",
                    )
                )
        return out

    def pool_stats(self) -> PoolStats | None:
        return None

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return link_statement(statement, link)
