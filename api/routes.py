"""The route table: one list of Endpoint(...) drives both the router and /openapi.json."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api import envelopes as env
from api.downloads import FORMAT_HELP, download, format_param
from api.errors import ApiError, envelope_for
from api.middleware import client_host, request_id_of
from api.responses import MsgspecResponse
from api.service import RequestContext
from api.version import VERSION
from connectors.base import TableInfo
from engine.bounds import parse_bounded
from engine.errors import UnknownDatabase, UnknownTable
from engine.ir import FederatedQuery
from engine.offload import off_loop
from engine.results import Reader
from engine.simple import OFF_LOOP_ROWS
from safety.catalog_view import database_visible, grants_for, table_view, tables_view

T = TypeVar("T")

if TYPE_CHECKING:
    from connectors.config import DatabaseConfig
    from engine.catalog import Catalog, DatabaseState
    from engine.config import Config
    from engine.results import ResultStore
    from safety.policy import DatabaseGrants

Handler = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type | tuple[type, ...] | None = None  # a tuple: one of these (anyOf)
    body: type | None = None
    query: tuple[tuple[str, str, int | None], ...] = ()  # (name, description, default)
    errors: tuple[int, ...] = ()
    status: int = 200
    also: tuple[int, ...] = ()  # other success statuses, with the same response body
    extra: dict[str, Any] = field(default_factory=dict)


def json_endpoint(func: Callable[[Request], Awaitable[Any]]) -> Handler:
    """Wrap a handler: encode its Struct result, turn any exception into the envelope."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        rid = request_id_of(request.scope)
        try:
            result = await func(request)
        except Exception as exc:
            status, envelope, headers = envelope_for(exc, rid)
            return MsgspecResponse(envelope, status_code=status, headers=headers)
        if isinstance(result, Response):
            return result
        if isinstance(result, env.QuerySuccess) and len(result.data.rows) > OFF_LOOP_ROWS:
            # encoding a large answer is seconds of CPU: never on the event loop
            parts = await off_loop(encode_in_slices, result)
            return StreamingResponse(iter(parts), media_type="application/json")
        return MsgspecResponse(result)

    return wrapper


ENCODE_SLICE_ROWS = 4_096
_EMPTY_ROWS = b'"rows":[]'


def encode_in_slices(result: env.QuerySuccess) -> list[bytes]:
    """The answer's JSON, its rows encoded a slice at a time: msgspec holds the GIL for a
    whole encode call, so one call over a million rows would stop the event loop's thread
    as surely as encoding on it. The envelope is encoded with no rows and they are spliced
    in (`"rows":[]` cannot occur inside a JSON string, and `data` comes first). Consumes
    the answer: its rows are emptied once encoded."""
    rows = result.data.rows
    shell = msgspec.structs.replace(result, data=msgspec.structs.replace(result.data, rows=[]))
    head = env.ENCODER.encode(shell)
    at = head.index(_EMPTY_ROWS) + len(_EMPTY_ROWS) - 1
    parts = [head[:at]]
    for i in range(0, len(rows), ENCODE_SLICE_ROWS):
        if i:
            parts.append(b",")
        parts.append(env.ENCODER.encode(rows[i : i + ENCODE_SLICE_ROWS])[1:-1])
    parts.append(head[at:])
    rows.clear()  # the million row objects are freed here, in the worker thread, not on the loop
    return parts  # sent piece by piece: one large write holds the loop too


def int_param(request: Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ApiError(
            400,
            "invalid_parameter",
            f"query parameter {name!r} must be an integer from {lo} to {hi}, got {raw!r}",
        )
    return value


def decode_body(request: Request, decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """A JSON body decoded by its typed decoder; nesting past Python's stack is a 400."""
    limit = request.app.state.config.limits.max_body_nesting
    return parse_bounded(lambda: decoder.decode(body), "the body", limit)


def principal_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("principal")  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: what the catalog shows them (the permission model of queries) and
    which stored objects they find (their own; any with the admin grant)."""

    config: Config
    principal: str | None
    admin: bool = False

    @property
    def reader(self) -> Reader:
        return Reader(self.principal, self.admin)

    def sees_database(self, name: str) -> bool:
        return database_visible(self.config, self.principal, name)

    def grants(self, db: DatabaseConfig) -> DatabaseGrants:
        return grants_for(self.config, self.principal, db)

    def tables(self, state: DatabaseState) -> list[TableInfo]:
        return tables_view(self.grants(state.config), state.tables)


def viewer_of(request: Request) -> Viewer:
    state = request.scope.get("state", {})
    config = request.app.state.config
    return Viewer(config, state.get("principal"), bool(state.get("admin")))


def reader_of(request: Request) -> Reader:
    """Who is looking a stored object up: objects of other principals are not found for
    them, unless their token holds the admin grant."""
    return viewer_of(request).reader


def audit_admin_access(request: Request, kind: str, object_id: str, owner: str | None) -> None:
    """An admin reading or changing another principal's object leaves an audit line."""
    principal = principal_of(request)
    if owner == principal:
        return
    audit = getattr(request.app.state.service, "audit", None)
    if audit is not None:
        audit.record(
            {
                "request_id": request_id_of(request.scope),
                "ts": time.time(),
                "event": "admin_access",
                "principal": principal,
                "method": request.method,
                "object": kind,
                "object_id": object_id,
                "owner": owner,
            }
        )


def request_context(request: Request, body_bytes: int = 0) -> RequestContext:
    host = client_host(request.scope)
    return RequestContext(
        request_id=request_id_of(request.scope),
        principal=request.scope.get("state", {}).get("principal"),
        transport="rest/local" if _is_loopback(host) else "rest/remote",
        client=host,
        body_bytes=body_bytes,
    )


@functools.lru_cache(maxsize=1024)
def _is_loopback(host: str | None) -> bool:
    if host is None:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


WATCH_AFTER_S = 0.05  # a query still running this long gets a disconnect watcher


async def run_cancellable(request: Request, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run `work`, cancelled if the client disconnects (the body is already read).

    The watcher (a task awaiting the server's `receive` for `http.disconnect`) starts only
    once `work` has run WATCH_AFTER_S: starting and cancelling it was ~7% of a granian
    worker's samples on the dashboard path (bench/results/dashboard.md), where almost every
    lookup is answered sooner. A query that is still running then is stopped as before; one
    whose client leaves earlier finishes first (a few ms of database work at most). A bare
    asyncio task, not an anyio task group (the group cost ~200 us a request); sluice runs on
    asyncio only (asyncpg, PyMongo's client)."""
    task = asyncio.current_task()
    assert task is not None
    disconnected = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal disconnected
        while (await request.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work()
    except asyncio.CancelledError:
        if disconnected and task.uncancel() == 0:
            raise ApiError(499, "client_closed", "the client closed the connection") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


# -- handlers ---------------------------------------------------------------------------------
@json_endpoint
async def health(request: Request) -> env.HealthResponse:
    catalog = request.app.state.catalog
    return env.HealthResponse(
        status="ok", version=VERSION, databases_connected=catalog.reachable_count
    )


@json_endpoint
async def databases(request: Request) -> env.DatabasesResponse:
    page = int_param(request, "page", 1, lo=1, hi=1_000_000)
    size = int_param(request, "size", 4, lo=1, hi=100)
    viewer = viewer_of(request)
    return database_page(request.app.state.catalog, page, size, viewer)


def database_page(catalog: Catalog, page: int, size: int, viewer: Viewer) -> env.DatabasesResponse:
    """A page of the databases the viewer's permission set names, each with the tables and
    columns it may see (the REST endpoint, MCP's tool and resources)."""
    visible = [s for s in catalog.states.values() if viewer.sees_database(s.config.name)]
    total = len(visible)
    pages = max(1, math.ceil(total / size))
    states = visible[(page - 1) * size : page * size]
    entries = [
        env.DatabaseEntry(
            name=s.config.name,
            type=s.config.type,
            database=s.config.display_database,
            reachable=s.reachable,
            tables=viewer.tables(s),
            error=s.error,
        )
        for s in states
    ]
    return env.DatabasesResponse(
        databases=entries,
        pagination=env.Pagination(
            page=page,
            size=size,
            total_databases=total,
            total_pages=max(1, math.ceil(total / size)),
            has_more=page < pages,
        ),
    )


@json_endpoint
async def table_detail(request: Request) -> TableInfo:
    catalog = request.app.state.catalog
    db, table = request.path_params["db"], request.path_params["table"]
    return await describe_table(catalog, db, table, viewer_of(request))


async def describe_table(catalog: Catalog, name: str, table: str, viewer: Viewer) -> TableInfo:
    """A table as the viewer may see it; one it may not see is as absent as a missing one."""
    state = catalog.get(name)
    if state is None or not viewer.sees_database(name):
        raise UnknownDatabase(name, [n for n in catalog.names() if viewer.sees_database(n)])
    found: TableInfo | None = await catalog.find_table(state, table)
    view = None if found is None else table_view(viewer.grants(state.config), found)
    if view is None:
        raise UnknownTable(name, table, [t.name for t in viewer.tables(state)])
    return view


@json_endpoint
async def query_simple(request: Request) -> Any:
    body = await request.body()
    req = decode_body(request, env.SIMPLE_DECODER, body)
    ctx = request_context(request, len(body))
    service = request.app.state.service
    return await run_cancellable(request, lambda: service.simple(req, ctx))


@json_endpoint
async def query_federated(request: Request) -> Any:
    body = await request.body()
    query = decode_body(request, env.FEDERATED_DECODER, body)
    ctx = request_context(request, len(body))
    service = request.app.state.service
    return await run_cancellable(request, lambda: service.federated(query, ctx))


@json_endpoint
async def result_page(request: Request) -> env.ResultPage | Response:
    rid = request.path_params["request_id"]
    fmt = format_param(request, None)
    if fmt is not None:  # the whole result as a file, like a run's
        return await download(request.app.state.service.store, rid, fmt, reader_of(request))
    page = int_param(request, "page", 1, lo=1, hi=10_000_000)
    size = int_param(request, "size", 100, lo=1, hi=10_000)
    store = request.app.state.service.store
    return await read_results(store, rid, page, size, viewer_of(request), request)


async def read_results(
    store: ResultStore,
    rid: str,
    page: int,
    size: int,
    viewer: Viewer,
    request: Request | None = None,
) -> env.ResultPage:
    """A page of a stored result its viewer may read (another principal's is not found; the
    admin grant reads any, audited when the `request` is given)."""
    got = await store.page(rid, page, size, viewer.reader)
    if request is not None:
        audit_admin_access(request, "result", rid, got.owner)
    return env.ResultPage(
        request_id=rid,
        page=page,
        size=size,
        columns=got.columns,
        rows=got.rows,
        has_more=got.has_more,
        total_rows=got.total,
    )


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/v1/health",
        health,
        "Liveness probe; never pings a database.",
        response=env.HealthResponse,
    ),
    Endpoint(
        "GET",
        "/v1/databases",
        databases,
        "Paginated list of configured databases with their discovered schemas.",
        response=env.DatabasesResponse,
        query=(("page", "1-indexed page number", 1), ("size", "databases per page, max 100", 4)),
        errors=(400,),
    ),
    Endpoint(
        "GET",
        "/v1/databases/{db}/tables/{table}",
        table_detail,
        "One table's schema with per-field distributions.",
        response=TableInfo,
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/v1/query/simple",
        query_simple,
        "One query on one database, through the safety pipeline.",
        response=(env.QuerySuccess, env.DryRunResponse),
        body=env.SimpleQueryRequest,
        errors=(400, 403, 404, 413, 500, 503, 504),
    ),
    Endpoint(
        "POST",
        "/v1/query",
        query_federated,
        "A DAG of steps across databases, merged in DuckDB.",
        response=(env.QuerySuccess, env.DryRunResponse),
        body=FederatedQuery,
        errors=(400, 403, 404, 413, 500, 503, 504, 507),
    ),
    Endpoint(
        "GET",
        "/v1/results/{request_id}",
        result_page,
        "A page of a stored federated result, in a stable order; with `format`, the whole "
        "result as a file.",
        response=env.ResultPage,
        query=(
            ("page", "1-indexed page number", 1),
            ("size", "rows per page, max 10,000", 100),
            ("format", FORMAT_HELP, None),
        ),
        errors=(400, 404),
    ),
]


def routes(endpoints: list[Endpoint]) -> list[Route]:
    table = [Route(e.path, e.handler, methods=[e.method]) for e in endpoints]
    table.append(Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False))
    return table
