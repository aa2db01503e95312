"""CouchDB (and PouchDB Server) over its HTTP API, through one pooled `httpx.AsyncClient`.

Settings: `dsn` is the server's URL (`http://127.0.0.1:5984`), or `host`/`port` (http); `user`
and `password` are sent as HTTP basic auth; `pool_size` bounds the keep-alive connections;
`connect_timeout_seconds` and the statement timeout bound every request.

Each step's `table` is one CouchDB database (`Statement.options["collection"]`). The body is
described in `connectors.couchdb_query`. Results:

- find / all_docs with `include_docs` / get: one row per document, top-level fields as
  columns (`_id`, `_rev` and the union of the fields seen, typed and flattened as
  `connectors.mongo_flatten` describes; nested objects and arrays as JSON);
- all_docs without documents: `id`, `key`, `rev`; view: `id`, `key`, `value` (and `doc`
  with `include_docs`), reduced rows `key`, `value`; explain: one row of the plan.

Paging. CouchDB's `_find` answers with at most `limit` documents (25 when unset), so reads
are paged up to `Statement.max_rows` (cap + 1) or the body's own `limit`, whichever is lower:
`_find` with the `bookmark` the server returns (CouchDB 2+), else with `skip` (PouchDB Server
returns no bookmark); `_all_docs` and views with `skip`. A page is `batch_size` rows.

Time. Every request runs under the statement's deadline (the whole stream shares it); past it
the request is abandoned and its connection closed, which ends the work on the server, and
the stream raises QueryTimedOut. Cancellation does the same. CouchDB has no per-request
server-side time limit to set.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import anyio
import httpx
import msgspec

from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, ServerSettings
from connectors.couchdb_query import (
    DESIGN_PREFIX,
    KEYS_OPTION,
    LINK_COLUMN_OPTION,
    LOCAL_PREFIX,
    CouchQuery,
    apply_link,
    parse,
)
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.mongo_discovery import infer_fields
from connectors.mongo_flatten import RowShaper

DEFAULT_PORT = 5984
DEFAULT_TIMEOUT_S = 30.0
MAX_DATABASES = 500
SAMPLE_SIZE = 200
DISCOVERY_CONCURRENCY = 8
# a response past this is refused before it is decoded (a page is batch_size documents)
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

_DECODER = msgspec.json.Decoder()
_ALL_DOCS_COLUMNS = [Column("id", "VARCHAR"), Column("key", "VARCHAR"), Column("rev", "VARCHAR")]


class CouchDBSettings(ServerSettings, tag="couchdb", frozen=True):
    """A CouchDB (or PouchDB Server) endpoint: `dsn` is its http(s) URL, or `host`/`port`;
    `database` is not used (each step's table is a CouchDB database)."""

    def problem(self) -> str | None:
        if self.dsn and not self.dsn.startswith(("http://", "https://")):
            return "a couchdb `dsn` is the server's URL: http://host:5984 or https://..."
        return super().problem()


class CouchDBConnector:
    """CouchDB / PouchDB Server through one pooled httpx client per configured server."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (CouchDBSettings,)
    language: ClassVar[str] = "couchdb"
    dialect: ClassVar[str] = "couchdb"

    def __init__(self, config: CouchDBSettings) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        c = self.config
        if c.dsn:
            return c.dsn.rstrip("/")
        return f"http://{c.host or '127.0.0.1'}:{c.port or DEFAULT_PORT}"

    async def open(self) -> None:
        if self._client is not None:
            return
        c = self.config
        auth = httpx.BasicAuth(c.user, c.password or "") if c.user else None
        try:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                auth=auth,
                headers={"Accept": "application/json", "User-Agent": "sluice"},
                limits=httpx.Limits(
                    max_connections=c.pool_size, max_keepalive_connections=c.pool_size
                ),
                timeout=httpx.Timeout(self._default_timeout, connect=c.connect_timeout_seconds),
            )
        except (ValueError, TypeError, httpx.InvalidURL) as exc:
            raise ConnectorUnavailable(c.name, f"invalid CouchDB settings: {exc}") from exc
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._client

    async def ping(self) -> None:
        seconds = self.config.connect_timeout_seconds
        try:
            with anyio.fail_after(seconds + 1):
                resp = await self._http().get("/", timeout=seconds)
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(self.config.name, f"unreachable: {exc}") from exc
        if resp.status_code >= 400:
            raise ConnectorUnavailable(
                self.config.name, f"CouchDB answered {resp.status_code}: {_reason(resp)}"
            )

    # -- one request -----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        statement: Statement,
        deadline: float,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """One request under the stream's deadline; the decoded JSON answer (None: a 404
        that `missing_ok` allows)."""
        db = self.config.name
        client = self._http()
        content = None if json is None else msgspec.json.encode(json)
        headers = {"Content-Type": "application/json"} if content is not None else None
        left = max(0.001, deadline - anyio.current_time())
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                resp = await client.request(
                    method, path, content=content, params=params, headers=headers, timeout=left
                )
            except httpx.TimeoutException:
                raise QueryTimedOut(db, statement.timeout) from None
            except httpx.TransportError as exc:
                raise ConnectorUnavailable(db, f"CouchDB unreachable: {exc}") from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)
        if missing_ok and resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise QueryFailed(db, f"CouchDB answered {resp.status_code}: {_reason(resp)}")
        if len(resp.content) > MAX_RESPONSE_BYTES:
            raise QueryFailed(db, f"CouchDB answer over {MAX_RESPONSE_BYTES} bytes; page it")
        try:
            return _DECODER.decode(resp.content)
        except msgspec.DecodeError as exc:
            raise QueryFailed(db, f"CouchDB answered with invalid JSON: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        query = parse(statement, self.config.name)
        deadline = anyio.current_time() + statement.timeout
        if not query.is_read:
            if statement.readonly:
                raise QueryFailed(
                    self.config.name,
                    f"`{query.operation}` writes; this statement is read-only",
                    suggestion="writes need a write grant (W/RW) in the permissions",
                )
            n = await self._write(query, statement, deadline)
            yield Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])
            return
        shaper = RowShaper()
        pages = self._pages(query, statement, deadline)
        sent = 0
        async with contextlib.aclosing(pages) as docs_pages:
            async for docs in docs_pages:
                if not docs:
                    continue
                if sent == 0:
                    docs[0] = _ids_first(docs[0])
                sent += len(docs)
                if statement.bulk:
                    yield await anyio.to_thread.run_sync(shaper.arrow, docs)
                else:
                    yield shaper.rows(docs)
        if sent == 0:
            columns = _empty_columns(query)
            link = statement.options.get(LINK_COLUMN_OPTION)
            if not columns and link:  # a linked batch that matched nothing: the merge's key
                columns = [Column(str(link), "VARCHAR")]
            yield Batch(columns, rows=[])

    async def _pages(
        self, query: CouchQuery, statement: Statement, deadline: float
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Lists of result rows as dicts, at most `max_rows` (or the body's limit) in all."""
        body, path = query.body, _db_path(query.database)
        total = _lowest(body.get("limit"), statement.max_rows)
        page_size = max(1, statement.batch_size)
        match query.operation:
            case "get":
                params = {"rev": body["rev"]} if body.get("rev") else None
                doc = await self._call(
                    "GET",
                    f"{path}/{doc_path(body['id'])}",
                    statement,
                    deadline,
                    params=params,
                    missing_ok=True,
                )
                if doc is not None and total != 0:
                    yield [doc]
            case "explain":
                yield [await self._call("POST", f"{path}/_explain", statement, deadline, json=body)]
            case "find" if KEYS_OPTION in statement.options:
                keys = statement.options[KEYS_OPTION]
                async for page in self._key_pages(query, keys, statement, deadline, total):
                    yield page
            case "find":
                async for page in self._find_pages(query, statement, deadline, total, page_size):
                    yield page
            case "all_docs" | "view":
                async for page in self._range_pages(query, statement, deadline, total, page_size):
                    yield page

    async def _find_pages(
        self,
        query: CouchQuery,
        statement: Statement,
        deadline: float,
        total: int | None,
        page_size: int,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        base = {k: v for k, v in query.body.items() if k not in ("operation", "database")}
        skip = int(base.pop("skip", 0) or 0)
        bookmark = base.pop("bookmark", None)
        base.pop("limit", None)
        path = f"{_db_path(query.database)}/_find"
        sent = 0
        while total is None or sent < total:
            want = page_size if total is None else min(page_size, total - sent)
            request = dict(base, limit=want)
            if bookmark:
                request["bookmark"] = bookmark
            else:
                request["skip"] = skip + sent
            answer = await self._call("POST", path, statement, deadline, json=request)
            docs = answer.get("docs") or []
            sent += len(docs)
            yield docs
            if len(docs) < want:
                return
            mark = answer.get("bookmark")
            bookmark = mark if isinstance(mark, str) and mark not in ("", "nil") else None

    async def _key_pages(
        self,
        query: CouchQuery,
        keys: list[str],
        statement: Statement,
        deadline: float,
        total: int | None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A find of documents by `_id` (a link on `_id` with no other condition): one
        `_all_docs` lookup of the keys, `fields` applied here as _find would."""
        if not keys or total == 0:
            return
        path = f"{_db_path(query.database)}/_all_docs"
        answer = await self._call(
            "POST",
            path,
            statement,
            deadline,
            json={"keys": keys},
            params={"include_docs": "true"},
        )
        docs = [
            r["doc"]
            for r in answer.get("rows") or ()
            if isinstance(r.get("doc"), dict) and not str(r.get("id")).startswith(DESIGN_PREFIX)
        ]
        fields = query.body.get("fields")
        if fields:
            docs = [{f: d[f] for f in fields if f in d} for d in docs]
        yield docs if total is None else docs[:total]

    async def _range_pages(
        self,
        query: CouchQuery,
        statement: Statement,
        deadline: float,
        total: int | None,
        page_size: int,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        body = query.body
        db_path = _db_path(query.database)
        if query.operation == "view":
            ddoc = doc_path(DESIGN_PREFIX + body["ddoc"])
            path = f"{db_path}/{ddoc}/_view/{quote(body['view'], safe='')}"
        else:
            path = f"{db_path}/_all_docs"
        params = {
            k: _param(v)
            for k, v in body.items()
            if k not in ("operation", "database", "keys", "ddoc", "view", "limit", "skip")
        }
        keys = body.get("keys")
        skip = int(body.get("skip") or 0)
        docs_rows = query.operation == "all_docs" and bool(body.get("include_docs"))
        sent = 0
        while total is None or sent < total:
            want = page_size if total is None else min(page_size, total - sent)
            page_params = dict(params, limit=str(want), skip=str(skip + sent))
            if keys is not None:
                answer = await self._call(
                    "POST", path, statement, deadline, json={"keys": keys}, params=page_params
                )
            else:
                answer = await self._call("GET", path, statement, deadline, params=page_params)
            rows = answer.get("rows") or []
            sent += len(rows)
            yield _range_rows(rows, query.operation, docs_rows)
            if len(rows) < want:
                return

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        query = parse(statement, self.config.name)
        if query.is_read:
            raise QueryFailed(
                self.config.name, f"`{query.operation}` is a read; execute_write takes writes"
            )
        deadline = anyio.current_time() + statement.timeout
        return await self._write(query, statement, deadline)

    async def _write(self, query: CouchQuery, statement: Statement, deadline: float) -> int:
        body, path = query.body, _db_path(query.database)
        match query.operation:
            case "insert" | "update":
                doc = body["document"]
                if isinstance(doc.get("_id"), str):
                    target = f"{path}/{doc_path(doc['_id'])}"
                    await self._call("PUT", target, statement, deadline, json=doc)
                else:
                    await self._call("POST", path, statement, deadline, json=doc)
                return 1
            case "delete":
                await self._call(
                    "DELETE",
                    f"{path}/{doc_path(body['id'])}",
                    statement,
                    deadline,
                    params={"rev": body["rev"]},
                )
                return 1
            case "bulk_docs":
                answer = await self._call(
                    "POST", f"{path}/_bulk_docs", statement, deadline, json={"docs": body["docs"]}
                )
                failed = [r for r in answer if isinstance(r, dict) and r.get("error")]
                if failed:
                    first = failed[0]
                    raise QueryFailed(
                        self.config.name,
                        f"_bulk_docs: {len(answer) - len(failed)} of {len(answer)} documents "
                        f"written; {first.get('id')!r}: {first.get('error')}: "
                        f"{first.get('reason')}",
                    )
                return len(answer)
            case "create_index":
                index = {k: v for k, v in body.items() if k not in ("operation", "database")}
                await self._call("POST", f"{path}/_index", statement, deadline, json=index)
                return 1
            case "create_database":
                await self._call("PUT", path, statement, deadline)
                return 1
            case "delete_database":
                await self._call("DELETE", path, statement, deadline)
                return 1
        raise AssertionError(query.operation)  # parse() allows only the cases above

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        names = await self._call("GET", "/_all_dbs", statement, deadline)
        names = sorted(n for n in names if isinstance(n, str) and not n.startswith("_"))
        names = names[:MAX_DATABASES]
        tables: dict[str, TableInfo] = {}
        limiter = anyio.CapacityLimiter(DISCOVERY_CONCURRENCY)

        async def one(name: str) -> None:
            async with limiter:
                path = _db_path(name)
                info = await self._call("GET", path, statement, deadline)
                sample = await self._call(
                    "GET",
                    f"{path}/_all_docs",
                    statement,
                    deadline,
                    params={"include_docs": "true", "limit": str(SAMPLE_SIZE)},
                )
                docs = [
                    r["doc"]
                    for r in sample.get("rows") or []
                    if isinstance(r.get("doc"), dict)
                    and not str(r.get("id", "")).startswith(DESIGN_PREFIX)
                ]
                tables[name] = TableInfo(
                    name, infer_fields(docs), row_count_estimate=info.get("doc_count")
                )

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return [tables[n] for n in names]

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, self.config.name)

    def pool_stats(self) -> PoolStats | None:
        return None  # httpx keeps its pool private; /metrics counts query slots instead


def _db_path(database: str) -> str:
    return "/" + quote(database, safe="")


def doc_path(doc_id: str) -> str:
    """A document id as a URL path: `_design/` and `_local/` keep their slash."""
    for prefix in (DESIGN_PREFIX, LOCAL_PREFIX):
        if doc_id.startswith(prefix):
            return prefix + quote(doc_id[len(prefix) :], safe="")
    return quote(doc_id, safe="")


def _param(value: Any) -> str:
    """A view/all_docs query parameter: JSON (keys are JSON values; booleans true/false)."""
    return msgspec.json.encode(value).decode()


def _lowest(body_limit: Any, max_rows: int | None) -> int | None:
    limits = [n for n in (body_limit, max_rows) if isinstance(n, int) and n >= 0]
    return min(limits) if limits else None


def _range_rows(rows: list[dict[str, Any]], operation: str, docs: bool) -> list[dict[str, Any]]:
    """all_docs/view rows as result rows: documents, or id/key/rev, or id/key/value."""
    if operation == "all_docs":
        if docs:
            return [r["doc"] for r in rows if isinstance(r.get("doc"), dict)]
        return [
            {"id": r.get("id"), "key": r.get("key"), "rev": (r.get("value") or {}).get("rev")}
            for r in rows
            if "error" not in r
        ]
    # CouchDB's own order (PouchDB sends key first); reduced rows have no id
    return [{k: r[k] for k in ("id", "key", "value", "doc") if k in r} for r in rows]


def _ids_first(doc: dict[str, Any]) -> dict[str, Any]:
    """The first document with `_id` and `_rev` leading, so they lead the columns (PouchDB
    puts them last; the shaper orders columns by first sight)."""
    head: dict[str, Any] = {k: doc[k] for k in ("_id", "_rev") if k in doc}
    return {**head, **doc} if head else doc


def _empty_columns(query: CouchQuery) -> list[Column]:
    body = query.body
    if query.operation in ("find", "explain") and isinstance(body.get("fields"), list):
        return [Column(str(f), "VARCHAR") for f in body["fields"]]
    if query.operation == "all_docs" and not body.get("include_docs"):
        return list(_ALL_DOCS_COLUMNS)
    return []


def _reason(resp: httpx.Response) -> str:
    """CouchDB's `error: reason` from an error answer, or the start of the body."""
    try:
        data = _DECODER.decode(resp.content)
    except msgspec.DecodeError:
        return resp.text[:200]
    if isinstance(data, dict) and ("error" in data or "reason" in data):
        return f"{data.get('error')}: {data.get('reason')}"
    return resp.text[:200]
