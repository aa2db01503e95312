"""Elasticsearch 7.x / OpenSearch over its REST API, through one pooled `httpx.AsyncClient`.

Why httpx and not a vendor client: `elasticsearch` 7.14+ refuses OSS and OpenSearch servers
(product check) and 8.x sends a compatibility header 7.x rejects; `opensearch-py` wraps the
same HTTP calls with a transport of its own (retries, sniffing) we would have to turn off. A
plain pooled client gives the cancellation we need (closing the connection makes the server
cancel the search task) and costs nothing extra per request.

Contract with the engine. `Statement.text` is one es_dsl body (see `connectors.es_request`),
already checked by the safety pipeline; the index of a bare search body is
`Statement.options["collection"]` (the step's table), and an envelope's path must name that
same index when the option is given.

Reads (`stream`):
- `_search` (bare body or envelope): hits -> rows, or aggregation buckets -> rows when the
  body has `aggs` (`connectors.es_rows`). Every search is sent with
  `allow_partial_search_results=false` and a server-side `timeout`; a response that still
  says `timed_out` is a QueryTimedOut, never a silently partial result.
- Paging: every search starts as one plain `_search` of at most one page (`batch_size`, at
  most 10,000 hits) that counts the matches up to `min(size, max_rows)`; when they all fit,
  that is the answer (lookups and link batches: one round trip). Otherwise the read restarts
  as a scroll (`scroll=<keep alive>`, pages of `batch_size`, cleared at the end whatever
  happens), the first page discarded. Elasticsearch 7.9
  OSS has no point-in-time, and `search_after` without one is neither consistent under
  concurrent writes nor possible without a unique sort field (sorting on `_id` loads the
  whole `_id` fielddata into the heap), so the connector pages with scroll; a body's own
  `search_after` is sent as written. A `composite` aggregation is paged by its `after_key`.
- `_count` -> one row `count`; `GET _doc/<id>` -> zero or one hit row; `_mget` -> the found
  documents as hit rows; `_msearch` -> every search's hits, `_search` (its 0-based position)
  first; `_mapping` / `_field_caps` -> one row per field (`field`, `type`).

Writes (`execute_write`, or `stream` with readonly=False -> one row `rows_affected`): index
(`PUT|POST _doc[/<id>]`, `_create/<id>`), `_update/<id>`, `DELETE _doc/<id>`, `_bulk` (a
list body: action and source lines), `_update_by_query`, `_delete_by_query`, and the
structural requests the policy grants at level A (create/delete an index, `_mapping`,
`_settings`, `_aliases`, `_open`, `_close`, `_reindex`). Document writes are made visible
before returning (`refresh=wait_for`, by-query writes `refresh=true`) unless the path sets
`refresh`. Elasticsearch has no transactions: a `_bulk` whose items partly fail keeps the
items that succeeded and is reported as a QueryFailed naming the first failure.

Links: `with_link` ANDs `{"terms": {column: values}}` into the query's `bool.filter` (the
original query kept as `must` when it is not a bool); more than 65,536 values (the
`index.max_terms_count` default) become several `terms` clauses under one `should`.

Cancellation: a cancelled read closes its HTTP connection (httpx), and Elasticsearch cancels
the search task of a closed channel; an open scroll is cleared in a shielded cleanup.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import math
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import anyio
import httpx
import msgspec

from connectors import es_discovery
from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, ServerSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.es_request import BodyError, EsRequest, parse
from connectors.es_rows import agg_defs, agg_rows, hit_docs, wants_score
from connectors.mongo_flatten import RowShaper

DEFAULT_TIMEOUT_S = 30.0
CLIENT_GRACE_S = 1.0
CLEAR_SCROLL_S = 5.0
# the server's own window (index.max_result_window) and its terms limit
MAX_WINDOW = 10_000
MAX_TERMS = 65_536
MAPPING_TTL_S = 60.0
UNBOUNDED = 2**31 - 1  # "every hit" (no size, no cap); also the largest track_total_hits
# cluster-level endpoints whose targets are named in the body (each one checked by the policy)
BODY_TARGETED = frozenset({"_bulk", "_mget", "_msearch", "_reindex", "_aliases"})
_DECODE = msgspec.json.Decoder().decode
_ENCODE = msgspec.json.Encoder().encode


class EsSettings(ServerSettings, tag="elasticsearch", frozen=True):
    """An Elasticsearch 7.x server: `dsn` (http(s)://[user:password@]host:port), `hosts`
    (tried in order at open; the first that answers is used), or `host`/`port`; basic auth
    (`user`/`password`) or an `api_key` (the base64 `id:key` Elasticsearch hands out)."""

    hosts: tuple[str, ...] = ()
    api_key: str | None = None
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def problem(self) -> str | None:
        given = [
            k
            for k, v in (
                ("dsn", self.dsn),
                ("hosts", self.hosts),
                ("host/port", self.host or self.port),
            )
            if v
        ]
        if len(given) > 1:
            return f"give one of `dsn`, `hosts` or `host`/`port`, not {' and '.join(given)}"
        if self.api_key and self.user:
            return "give either `api_key` or `user`/`password`, not both"
        if self.tls_key_file and not self.tls_cert_file:
            return "`tls_key_file` needs `tls_cert_file`"
        return None

    def secrets(self) -> tuple[str, ...]:
        return (*super().secrets(), *((self.api_key,) if self.api_key else ()))

    def resolved(self, base: Path) -> DatabaseConfig:
        fields = {}
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            value = getattr(self, name)
            if value and not Path(value).is_absolute():
                fields[name] = str((base / value).resolve())
        return msgspec.structs.replace(self, **fields) if fields else self


class OpenSearchSettings(EsSettings, tag="opensearch", frozen=True):
    """An OpenSearch server: the same REST protocol and settings as Elasticsearch 7."""


class ElasticsearchConnector:
    """Elasticsearch 7.x and OpenSearch (same REST protocol) through one pooled client."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (EsSettings, OpenSearchSettings)
    language: ClassVar[str] = "es_dsl"
    dialect: ClassVar[str] = "elasticsearch"

    def __init__(self, config: EsSettings) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S
        # index -> (when fetched, top-level field -> mapping type): see `_mapping`
        self._mappings: dict[str, tuple[float, dict[str, str]]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def base_urls(self) -> list[str]:
        """Every configured host's URL (user info stripped: credentials go in a header)."""
        c = self.config
        hosts = [c.dsn] if c.dsn else list(c.hosts)
        if not hosts:
            hosts = [f"http://{c.host or '127.0.0.1'}:{c.port or 9200}"]
        out = []
        for h in hosts:
            u = urlsplit(h if "://" in h else f"http://{h}")
            netloc = u.hostname or "127.0.0.1"
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if u.port:
                netloc += f":{u.port}"
            out.append(f"{u.scheme}://{netloc}{u.path.rstrip('/')}")
        return out

    def _auth_header(self) -> dict[str, str]:
        c = self.config
        if c.api_key:
            return {"Authorization": f"ApiKey {c.api_key}"}
        user, password = c.user, c.password
        if c.dsn and not user:
            u = urlsplit(c.dsn)
            user = unquote(u.username) if u.username else None
            password = unquote(u.password) if u.password else None
        if user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {}

    def _verify(self) -> ssl.SSLContext | bool:
        c = self.config
        if not c.tls_verify:
            return False
        if not c.tls_ca_file and not c.tls_cert_file:
            return True
        ctx = ssl.create_default_context(cafile=c.tls_ca_file)
        if c.tls_cert_file:
            ctx.load_cert_chain(c.tls_cert_file, c.tls_key_file)
        return ctx

    async def open(self) -> None:
        if self._client is not None:
            return
        c = self.config
        try:
            verify = self._verify()
        except (OSError, ssl.SSLError) as exc:
            raise ConnectorUnavailable(c.name, f"TLS settings: {exc}") from exc
        failures = []
        for url in self.base_urls():
            self._client = httpx.AsyncClient(
                base_url=url,
                headers={"Content-Type": "application/json", **self._auth_header()},
                limits=httpx.Limits(
                    max_connections=c.pool_size, max_keepalive_connections=c.pool_size
                ),
                timeout=httpx.Timeout(
                    self._default_timeout + CLIENT_GRACE_S, connect=c.connect_timeout_seconds
                ),
                verify=verify,
            )
            try:
                await self.ping()
                return
            except ConnectorUnavailable as exc:
                failures.append(f"{url}: {exc.detail}")
                await self.close()
            except BaseException:
                await self.close()
                raise
        raise ConnectorUnavailable(c.name, "no host answered: " + "; ".join(failures))

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
            with anyio.fail_after(seconds + CLIENT_GRACE_S):
                r = await self._http().get("/", timeout=seconds)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(self.config.name, f"unreachable: {exc}") from exc
        if r.status_code in (401, 403):
            raise ConnectorUnavailable(self.config.name, f"authentication failed: {_reason(r)}")
        if r.status_code != 200:
            raise ConnectorUnavailable(self.config.name, f"HTTP {r.status_code}: {_reason(r)}")

    # -- one HTTP call ---------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        statement: Statement,
        *,
        body: Any = None,
        params: Sequence[tuple[str, str]] = (),
        ndjson: bool = False,
        ok_404: bool = False,
    ) -> Any:
        """One request, its JSON answer decoded. Errors become connector errors; the
        client-side deadline trails the server's `timeout` by CLIENT_GRACE_S."""
        db = self.config.name
        content: bytes | None = None
        headers = {}
        if ndjson:
            content = b"".join(_ENCODE(line) + b"\n" for line in body or ())
            headers["Content-Type"] = "application/x-ndjson"
        elif body is not None:
            content = _ENCODE(body)
        seconds = statement.timeout + CLIENT_GRACE_S
        with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
            try:
                r = await self._http().request(
                    method,
                    path,
                    content=content,
                    params=list(params),
                    headers=headers,
                    timeout=seconds,
                )
            except httpx.TimeoutException as exc:
                raise QueryTimedOut(db, statement.timeout) from exc
            except httpx.HTTPError as exc:
                raise ConnectorUnavailable(db, f"request failed: {exc}") from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)
        if r.status_code == 404 and ok_404:
            return None
        if r.status_code >= 400:
            raise _error(db, r, statement)
        if not r.content:
            return {}
        try:
            return _DECODE(r.content)
        except msgspec.DecodeError as exc:
            raise QueryFailed(db, f"the server sent invalid JSON: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------

    def request_of(self, statement: Statement) -> EsRequest:
        table = statement.options.get("collection")
        try:
            req = parse(statement.text, table)
        except BodyError as exc:
            raise QueryFailed(self.config.name, exc.reason, suggestion=exc.suggestion) from exc
        if req.index is None and not req.enveloped:
            raise QueryFailed(self.config.name, "a bare search body needs the step's table")
        if req.enveloped and table and req.index != table:
            if req.index is not None or req.endpoint not in BODY_TARGETED:
                named = f"index {req.index!r}" if req.index else "no index"
                raise QueryFailed(
                    self.config.name,
                    f"the path names {named}, the step's table is {table!r}",
                    suggestion=f"the path must be /{table}/<endpoint>",
                )
        return req

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        req = self.request_of(statement)
        if not is_read(req):
            if statement.readonly:
                raise QueryFailed(
                    self.config.name,
                    f"{req.method} {req.url_path()} writes; this statement is read-only",
                    suggestion="writes need a write grant (W/RW) in the permissions",
                )
            n = await self._write(req, statement)
            yield Batch([Column("rows_affected", "BIGINT")], rows=[(n,)])
            return
        shaper = RowShaper()
        match req.endpoint:
            case "_search":
                async with contextlib.aclosing(self._search(req, statement, shaper)) as pages:
                    async for batch in pages:
                        yield batch
            case "_count":
                res = await self.call(
                    "POST", req.url_path(), statement, body=_count_body(req), params=req.params
                )
                yield (
                    shaper.rows([{"count": res.get("count")}])
                    if not statement.bulk
                    else shaper.arrow([{"count": res.get("count")}])
                )
            case "_doc" | "_source" if req.method in ("GET", "HEAD"):
                res = await self.call(
                    "GET", req.url_path(), statement, params=req.params, ok_404=True
                )
                docs = []
                if res and req.endpoint == "_source":
                    docs = [{"_id": req.doc_id, **res}]
                elif res and res.get("found"):
                    docs = hit_docs([res], score=False)
                yield self._shape(shaper, docs, statement, ["_id"])
            case "_mget":
                res = await self.call(
                    "POST", req.url_path(), statement, body=req.body, params=req.params
                )
                found = [d for d in res.get("docs", []) if d.get("found")]
                yield self._shape(
                    shaper, hit_docs(found, score=False)[: _cap(statement)], statement, ["_id"]
                )
            case "_msearch":
                res = await self.call(
                    "POST",
                    req.url_path(),
                    statement,
                    body=req.body,
                    params=req.params,
                    ndjson=True,
                )
                docs = []
                for i, one in enumerate(res.get("responses", [])):
                    if "error" in one:
                        raise QueryFailed(self.config.name, f"_msearch search {i}: {_short(one)}")
                    if one.get("timed_out"):
                        raise QueryTimedOut(self.config.name, statement.timeout)
                    for doc in hit_docs(one.get("hits", {}).get("hits", []), score=False):
                        docs.append({"_search": i, **doc})
                yield self._shape(shaper, docs[: _cap(statement)], statement, ["_search", "_id"])
            case "_mapping" | "_field_caps":
                fields = await es_discovery.fields_of(self, req.index or "", statement)
                docs = [{"field": f.name, "type": f.data_type} for f in fields]
                yield self._shape(shaper, docs[: _cap(statement)], statement, ["field", "type"])
            case _:
                raise QueryFailed(
                    self.config.name,
                    f"{req.method} {req.endpoint or req.url_path()} is not a read this "
                    "connector runs",
                    suggestion="reads: _search, _count, GET _doc/<id>, _mget, _mapping, "
                    "_field_caps",
                )

    def _shape(
        self,
        shaper: RowShaper,
        docs: list[dict[str, Any]],
        statement: Statement,
        empty: list[str],
    ) -> Batch:
        if not docs:
            return Batch([Column(n, "VARCHAR") for n in empty], rows=[])
        return shaper.arrow(docs) if statement.bulk else shaper.rows(docs)

    async def _search(
        self, req: EsRequest, statement: Statement, shaper: RowShaper
    ) -> AsyncGenerator[Batch, None]:
        body = dict(req.body or {})
        params = [p for p in req.params if p[0] not in ("allow_partial_search_results",)]
        params.append(("allow_partial_search_results", "false"))
        body.setdefault("timeout", f"{max(1, int(statement.timeout * 1000))}ms")
        defs = agg_defs(body)
        if defs:
            async for batch in self._aggregations(req, body, params, defs, statement, shaper):
                yield batch
            return
        mapping = await self._mapping(req.index, statement) if req.index else {}
        shape = HitShape.of(body, mapping)
        wanted = _wanted(body.get("size"), statement.max_rows)
        page = max(1, min(statement.batch_size, MAX_WINDOW))
        path = req.url_path()
        start = int(body.get("from") or 0)
        sent = 0
        single = wanted <= page or "search_after" in body or start
        # one plain search first, counting matches up to `wanted`: most reads (lookups, link
        # batches) fit in it, and a scroll costs a context and two more round trips
        first = dict(body, size=min(wanted, page if not single else wanted))
        if not single and first.get("track_total_hits") is not True:
            first["track_total_hits"] = True if wanted >= UNBOUNDED else wanted
        res = await self._timed(
            self.call("POST", path, statement, body=first, params=params), statement
        )
        hits = res.get("hits", {}).get("hits", [])
        total = res.get("hits", {}).get("total") or {}
        if (
            single
            or len(hits) < first["size"]
            or (total.get("relation") == "eq" and total.get("value", 0) <= len(hits))
        ):
            yield await self._batch(shaper, hits, shape, statement)
            return
        # more than one page: scroll from the start, the plain page discarded (its order
        # need not match the scroll's); see the module docstring for why not search_after
        body["size"] = page
        if "sort" not in body and not shape.score:
            body["sort"] = ["_doc"]
        keep_alive = f"{max(1, math.ceil(statement.timeout))}s"
        res = await self._timed(
            self.call("POST", path, statement, body=body, params=[*params, ("scroll", keep_alive)]),
            statement,
        )
        scroll_id = res.get("_scroll_id")
        try:
            while True:
                hits = res.get("hits", {}).get("hits", [])
                hits = hits[: wanted - sent]
                if hits or sent == 0:
                    yield await self._batch(shaper, hits, shape, statement)
                sent += len(hits)
                total = res.get("hits", {}).get("total") or {}
                exhausted = total.get("relation") == "eq" and sent >= total.get("value", 0)
                if len(hits) < page or exhausted or sent >= wanted or not scroll_id:
                    return
                res = await self._timed(
                    self.call(
                        "POST",
                        "/_search/scroll",
                        statement,
                        body={"scroll": keep_alive, "scroll_id": scroll_id},
                    ),
                    statement,
                )
                scroll_id = res.get("_scroll_id") or scroll_id
        finally:
            if scroll_id:
                await self._clear_scroll(scroll_id)

    async def _mapping(self, index: str, statement: Statement) -> dict[str, str]:
        """The index's top-level field types, cached MAPPING_TTL_S (one GET per index)."""
        now = time.monotonic()
        cached = self._mappings.get(index)
        if cached is not None and now - cached[0] < MAPPING_TTL_S:
            return cached[1]
        types = await es_discovery.index_mapping(self, index, statement)
        self._mappings[index] = (now, types)
        return types

    async def _timed(self, coro: Any, statement: Statement) -> Any:
        res = await coro
        if isinstance(res, dict) and res.get("timed_out"):
            raise QueryTimedOut(self.config.name, statement.timeout)
        return res

    async def _batch(
        self,
        shaper: RowShaper,
        hits: list[dict[str, Any]],
        shape: HitShape,
        statement: Statement,
    ) -> Batch:
        if not hits:
            return Batch(list(shaper.columns) or shape.empty, rows=[])
        if statement.bulk:
            return await anyio.to_thread.run_sync(_arrow, shaper, hits, shape)
        return shaper.rows(hit_docs(hits, shape.score, shape.floats))

    async def _aggregations(
        self,
        req: EsRequest,
        body: dict[str, Any],
        params: list[tuple[str, str]],
        defs: dict[str, Any],
        statement: Statement,
        shaper: RowShaper,
    ) -> AsyncIterator[Batch]:
        body.setdefault("size", 0)
        cap = _cap(statement)
        composite = _single_composite(defs)
        sent = 0
        while True:
            res = await self._timed(
                self.call("POST", req.url_path(), statement, body=body, params=params), statement
            )
            aggs = res.get("aggregations") or {}
            rows = agg_rows(aggs, defs)[: cap - sent] if cap is not None else agg_rows(aggs, defs)
            if rows or sent == 0:
                yield self._shape(shaper, rows, statement, list(defs))
            sent += len(rows)
            after = (aggs.get(composite) or {}).get("after_key") if composite else None
            if not after or not rows or (cap is not None and sent >= cap):
                return
            spec = dict(body["aggs" if "aggs" in body else "aggregations"][composite])
            spec["composite"] = {**spec["composite"], "after": after}
            key = "aggs" if "aggs" in body else "aggregations"
            body[key] = {**body[key], composite: spec}

    async def _clear_scroll(self, scroll_id: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEAR_SCROLL_S):
            with contextlib.suppress(httpx.HTTPError):
                await self._http().request(
                    "DELETE", "/_search/scroll", content=_ENCODE({"scroll_id": [scroll_id]})
                )

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        req = self.request_of(statement)
        if is_read(req):
            raise QueryFailed(
                self.config.name, f"{req.endpoint} is a read; execute_write takes writes"
            )
        return await self._write(req, statement)

    async def _write(self, req: EsRequest, statement: Statement) -> int:
        params = list(req.params)
        has_refresh = req.param("refresh") is not None
        match req.endpoint:
            case "_doc" | "_create" | "_update":
                if not has_refresh:
                    params.append(("refresh", "wait_for"))
                res = await self.call(
                    req.method,
                    req.url_path(),
                    statement,
                    body=req.body,
                    params=params,
                    ok_404=req.method == "DELETE",
                )
                if res is None:
                    return 0
                return 1 if res.get("result") in ("created", "updated", "deleted") else 0
            case "_bulk":
                if not has_refresh:
                    params.append(("refresh", "wait_for"))
                res = await self.call(
                    "POST", req.url_path(), statement, body=req.body, params=params, ndjson=True
                )
                return _bulk_count(self.config.name, res)
            case "_update_by_query" | "_delete_by_query":
                if not has_refresh:
                    params.append(("refresh", "true"))
                res = await self.call(
                    "POST", req.url_path(), statement, body=req.body, params=params
                )
                if res.get("failures"):
                    raise QueryFailed(
                        self.config.name, f"{req.endpoint} failed: {_short(res['failures'][0])}"
                    )
                return int(res.get("updated", 0) + res.get("deleted", 0))
            case _:
                res = await self.call(
                    req.method, req.url_path(), statement, body=req.body, params=params
                )
                for key in ("created", "updated", "deleted"):
                    if key in res and isinstance(res[key], int):
                        return int(
                            res.get("created", 0) + res.get("updated", 0) + res.get("deleted", 0)
                        )
                return 1 if res.get("acknowledged", True) else 0

    def pool_stats(self) -> PoolStats | None:
        return None  # httpx keeps its pool private; /metrics counts query slots instead

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        return await es_discovery.discover(self, statement)

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        req = self.request_of(statement)
        if req.endpoint not in ("_search", "_count"):
            raise QueryFailed(
                self.config.name,
                f"a linked step must search (_search or _count), not {req.endpoint}",
            )
        body = dict(req.body or {})
        body["query"] = link_query(
            body.get("query"), link.column, [json_value(v) for v in link.values]
        )
        return Statement(
            text=req.with_body(body).to_text(),
            params=statement.params,
            timeout=statement.timeout,
            readonly=statement.readonly,
            max_rows=statement.max_rows,
            batch_size=statement.batch_size,
            bulk=statement.bulk,
            options=statement.options,
        )


@dataclass(frozen=True, slots=True)
class HitShape:
    """How hits of one search become rows: a `_score` column or not, the mapping's floating
    fields (whole numbers there become floats, so `10` before `10.5` cannot make the column
    BIGINT), and the columns of an empty result (from the mapping and `_source`)."""

    score: bool
    floats: frozenset[str]
    empty: list[Column]

    @classmethod
    def of(cls, body: Mapping[str, Any], mapping: Mapping[str, str]) -> HitShape:
        score = wants_score(body)
        source = body.get("_source", True)
        if source is False:
            names: list[str] = []
        elif isinstance(source, str | list):
            wanted = [source] if isinstance(source, str) else source
            names = [n for n in mapping if n in wanted]
        else:
            names = list(mapping)
        empty = [Column("_id", "VARCHAR")] + ([Column("_score", "DOUBLE")] if score else [])
        empty += [Column(n, es_discovery.column_type(mapping[n])) for n in names]
        floats = frozenset(n for n, t in mapping.items() if t in es_discovery.FLOATING)
        return cls(score, floats, empty)


def _arrow(shaper: RowShaper, hits: list[dict[str, Any]], shape: HitShape) -> Batch:
    return shaper.arrow(hit_docs(hits, shape.score, shape.floats))


def link_query(query: Any, column: str, values: list[Any]) -> dict[str, Any]:
    """`query` AND `column` in `values`: a terms filter in the query's bool.filter."""
    chunks = [values[i : i + MAX_TERMS] for i in range(0, len(values), MAX_TERMS)] or [[]]
    terms: dict[str, Any] = (
        {"terms": {column: chunks[0]}}
        if len(chunks) == 1
        else {
            "bool": {"should": [{"terms": {column: c}} for c in chunks], "minimum_should_match": 1}
        }
    )
    if isinstance(query, Mapping) and set(query) == {"bool"} and isinstance(query["bool"], Mapping):
        inner = dict(query["bool"])
        existing = inner.get("filter")
        filters = list(existing) if isinstance(existing, list) else [existing] if existing else []
        inner["filter"] = [*filters, terms]
        return {"bool": inner}
    out: dict[str, Any] = {"filter": [terms]}
    if query is not None:
        out["must"] = [query]
    return {"bool": out}


def json_value(v: Any) -> Any:
    """A parent's link value as a JSON term (dates ISO 8601, decimals and UUIDs as text)."""
    match v:
        case bool() | int() | float() | str():
            return v
        case decimal.Decimal():
            return int(v) if v == v.to_integral_value() else float(v)
        case dt.datetime() | dt.date() | dt.time():
            return v.isoformat()
        case uuid.UUID():
            return str(v)
        case bytes():
            return base64.b64encode(v).decode()
    return str(v)


def is_read(req: EsRequest) -> bool:
    if req.endpoint in ("_search", "_count", "_mget", "_field_caps", "_msearch"):
        return req.method in ("GET", "POST")
    if req.endpoint in ("_doc", "_source", "_mapping"):
        return req.method in ("GET", "HEAD")
    return False


def _wanted(size: Any, max_rows: int | None) -> int:
    """Hits to fetch: the lower of the body's size and the cap; every hit when neither."""
    limits = [n for n in (size if isinstance(size, int) else None, max_rows) if n is not None]
    return min(limits) if limits else UNBOUNDED


def _cap(statement: Statement) -> int | None:
    return statement.max_rows


def _count_body(req: EsRequest) -> dict[str, Any] | None:
    if not isinstance(req.body, Mapping) or "query" not in req.body:
        return None
    return {"query": req.body["query"]}


def _single_composite(defs: Mapping[str, Any]) -> str | None:
    if len(defs) == 1:
        name, d = next(iter(defs.items()))
        if isinstance(d, Mapping) and "composite" in d:
            return str(name)
    return None


def _bulk_count(db: str, res: Mapping[str, Any]) -> int:
    done = 0
    first_error = None
    for item in res.get("items", []):
        ((_, outcome),) = item.items()
        if "error" in outcome:
            first_error = first_error or outcome
        elif outcome.get("result") in ("created", "updated", "deleted"):
            done += 1
    if first_error is not None:
        raise QueryFailed(
            db,
            f"_bulk: {done} item(s) applied, the first failure: {_short(first_error)}",
            suggestion="Elasticsearch has no transactions: the applied items stay",
        )
    return done


def _short(obj: Any) -> str:
    if isinstance(obj, Mapping):
        err = obj.get("error", obj.get("cause", obj))
        if isinstance(err, Mapping):
            return f"{err.get('type', '')}: {err.get('reason', '')}".strip(": ")
        return str(err)[:500]
    return str(obj)[:500]


def _reason(r: httpx.Response) -> str:
    try:
        data = _DECODE(r.content)
    except msgspec.DecodeError:
        return r.text[:500]
    if isinstance(data, Mapping) and "error" in data:
        err = data["error"]
        if isinstance(err, Mapping):
            root = (err.get("root_cause") or [err])[0]
            return f"{root.get('type', '')}: {root.get('reason', '')}".strip(": ")
        return str(err)[:500]
    return r.text[:500]


def _error(db: str, r: httpx.Response, statement: Statement) -> Exception:
    reason = _reason(r)
    if r.status_code in (401, 403):
        return ConnectorUnavailable(db, f"HTTP {r.status_code}: {reason}")
    if r.status_code in (502, 503):
        return ConnectorUnavailable(db, f"HTTP {r.status_code}: {reason}")
    if "timed out" in reason.lower() or "timeout" in reason.lower() and r.status_code == 504:
        return QueryTimedOut(db, statement.timeout)
    return QueryFailed(db, f"HTTP {r.status_code}: {reason}")
