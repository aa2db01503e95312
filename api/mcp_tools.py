"""The MCP tools. Each is an input Struct (the REST body where the route has one), a
description, and a handler that calls the function the REST route calls: the same
QueryService, catalog, result store and run manager, so an agent meets the same safety
pipeline, permissions, audit log and errors as a REST client. No MCP type appears here
(api/mcp_server.py speaks the protocol); a handler returns a Struct or raises."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from api import envelopes as env
from api.envelopes import ENCODER, Body
from api.routes import Viewer, database_page, describe_table, read_results
from api.run_admission import submit
from api.run_envelopes import RunAccepted, RunSubmit, rfc3339, view
from api.runs_routes import owned_run
from connectors import registry as connectors
from engine.errors import InvalidRequest
from engine.ir import FederatedQuery

if TYPE_CHECKING:
    from api.service import QueryService, RequestContext
    from engine.runs import RunManager

TEXT_ROWS = 20  # rows in a tool result's text rendering; every row is in its structured content
TEXT_CELL = 40  # characters of a cell in the text rendering


@dataclass(slots=True)
class Backend:
    """What the tools call: the running server's service and run manager (app.state), or
    the ones `sluice mcp` starts in its own process."""

    service: QueryService
    runs: RunManager


# -- inputs of the tools without a REST body (their REST forms are path and query params) ----
class ListDatabases(Body):
    page: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4


class DescribeTable(Body):
    database: str
    table: str


class GetResults(Body):
    """Either the `next_cursor` of a previous result, or a request id (or run id) and page."""

    cursor: str | None = None
    request_id: str | None = None
    page: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1
    size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class RunRef(Body):
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


# -- cursors ----------------------------------------------------------------------------------
class _Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    request_id: str
    page: int
    size: int


def encode_cursor(request_id: str, page: int, size: int) -> str:
    raw = msgspec.json.encode(_Cursor(request_id, page, size))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        got = None
    if got is None or not (got.page >= 1 and 1 <= got.size <= 10_000):
        raise InvalidRequest(
            f"cursor {cursor[:40]!r} is not a cursor sluice gave out",
            suggestion="pass the next_cursor of a query or get_results result unchanged",
        )
    return got


# -- results ----------------------------------------------------------------------------------
@dataclass(slots=True)
class ToolResult:
    """A tool's answer: `data` becomes the structured content (the REST envelope, plus
    `next_cursor` where there is more to read); `text` is the short rendering."""

    data: dict[str, Any]
    text: str


def plain(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct as the JSON the REST route sends (decimals as numbers, bytes base64...)."""
    out: dict[str, Any] = msgspec.json.decode(ENCODER.encode(value))
    return out


def render_rows(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """The first TEXT_ROWS rows as a Markdown table, cells cut at TEXT_CELL characters."""
    if not columns:
        return ""

    def cell(v: Any) -> str:
        text = "NULL" if v is None else v if isinstance(v, str) else ENCODER.encode(v).decode()
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= TEXT_CELL else text[: TEXT_CELL - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows[:TEXT_ROWS]]
    if len(rows) > TEXT_ROWS:
        lines.append(f"({len(rows) - TEXT_ROWS} more rows in the structured content)")
    return "\n".join(lines)


def query_result(result: env.QuerySuccess | env.DryRunResponse) -> ToolResult:
    data = plain(result)
    if isinstance(result, env.DryRunResponse):
        lines = [f"dry run {result.request_id}: nothing executed"]
        lines += [f"- {s.database}.{s.table} ({s.operation}): {s.rewritten}" for s in result.steps]
        return ToolResult(data, "\n".join(lines + _warnings(result.safety.warnings)))
    d = result.data
    cursor = None
    pages = result.metadata.result_pages
    if d.truncated and pages is not None and d.rows:
        # the next page starts right after the inline rows: pages of that many rows
        cursor = encode_cursor(result.request_id, 2, len(d.rows))
    data["next_cursor"] = cursor
    if d.rows_affected is not None and not d.columns:
        head = f"{d.rows_affected} row(s) affected"
    else:
        head = f"{len(d.rows)} of {d.row_count} row(s)"
    lines = [f"{head} (request {result.request_id}, truncated: {str(d.truncated).lower()})"]
    table = render_rows(d.columns, d.rows)
    if table:
        lines.append(table)
    if cursor is not None:
        lines.append(f"next page: get_results with cursor {cursor!r}")
    elif d.truncated:
        lines.append(
            "truncated at the row cap and not stored: narrow the query (WHERE, LIMIT, an "
            "aggregate), or run it as a one-step `query` to page the whole result"
        )
    return ToolResult(data, "\n".join(lines + _warnings(result.safety.warnings)))


def _warnings(warnings: list[str]) -> list[str]:
    return [f"warning: {w}" for w in warnings]


# -- handlers ---------------------------------------------------------------------------------
def mcp_viewer(b: Backend, ctx: RequestContext) -> Viewer:
    """The caller as the catalog and the stores see it (MCP carries no admin grant)."""
    return Viewer(b.service.config, ctx.principal)


Handler = Callable[[Backend, Any, "RequestContext"], Awaitable[ToolResult]]


async def list_databases(b: Backend, args: ListDatabases, ctx: RequestContext) -> ToolResult:
    got = database_page(b.service.catalog, args.page, args.size, mcp_viewer(b, ctx))
    lines = []
    for db in got.databases:
        state = "reachable" if db.reachable else f"unreachable: {db.error}"
        tables = ", ".join(t.name for t in db.tables) or "(no tables)"
        speaks = connectors.get(db.type).language
        lines.append(f"- {db.name} ({db.type}, speaks {speaks}, {state}): {tables}")
    p = got.pagination
    lines.append(f"page {p.page} of {p.total_pages} ({p.total_databases} databases)")
    if p.has_more:
        lines.append(f"more: list_databases with page {p.page + 1}")
    return ToolResult(plain(got), "\n".join(lines))


async def describe(b: Backend, args: DescribeTable, ctx: RequestContext) -> ToolResult:
    info = await describe_table(b.service.catalog, args.database, args.table, mcp_viewer(b, ctx))
    rows = "" if info.row_count_estimate is None else f", ~{info.row_count_estimate:,} rows"
    lines = [f"{args.database}.{info.name}{rows}"]
    for f in info.fields:
        flags = [k for k, on in (("pk", f.is_primary), ("fk", f.is_foreign_key)) if on]
        flags += [] if f.nullable else ["not null"]
        lines.append(f"- {f.name}: {f.data_type}" + (f" ({', '.join(flags)})" if flags else ""))
    return ToolResult(plain(info), "\n".join(lines))


async def query_simple(b: Backend, args: env.SimpleQueryRequest, ctx: RequestContext) -> ToolResult:
    return query_result(await b.service.simple(args, ctx))


async def query(b: Backend, args: FederatedQuery, ctx: RequestContext) -> ToolResult:
    return query_result(await b.service.federated(args, ctx))


async def get_results(b: Backend, args: GetResults, ctx: RequestContext) -> ToolResult:
    if args.cursor is not None:
        c = decode_cursor(args.cursor)
        rid, page, size = c.request_id, c.page, c.size
    elif args.request_id is not None:
        rid, page, size = args.request_id, args.page, args.size
    else:
        raise InvalidRequest(
            "get_results needs a cursor or a request_id",
            suggestion="pass the next_cursor of a `query` result, or its request_id and a page",
        )
    got = await read_results(b.service.store, rid, page, size, mcp_viewer(b, ctx))
    data = plain(got)
    cursor = encode_cursor(rid, page + 1, size) if got.has_more else None
    data["next_cursor"] = cursor
    first = (page - 1) * size
    lines = [
        f"rows {first + 1}-{first + len(got.rows)} of {got.total_rows} (request {rid}, "
        f"page {page}, has_more: {str(got.has_more).lower()})",
        render_rows(got.columns, got.rows),
    ]
    if cursor is not None:
        lines.append(f"next page: get_results with cursor {cursor!r}")
    return ToolResult(data, "\n".join(lines))


async def submit_run(b: Backend, args: RunSubmit, ctx: RequestContext) -> ToolResult:
    record = await submit(b.service, b.runs, args, ctx)
    accepted = RunAccepted(
        run_id=record.run_id, status=record.status, submitted_at=rfc3339(record.submitted_at) or ""
    )
    return ToolResult(
        plain(accepted),
        f"run {record.run_id} {record.status}; follow it with get_run {{'run_id': "
        f"{record.run_id!r}}}",
    )


async def get_run_tool(b: Backend, args: RunRef, ctx: RequestContext) -> ToolResult:
    record = await owned_run(b.runs, args.run_id, mcp_viewer(b, ctx).reader)
    return _run_result(view(record))


async def cancel_run(b: Backend, args: RunRef, ctx: RequestContext) -> ToolResult:
    owned = await owned_run(b.runs, args.run_id, mcp_viewer(b, ctx).reader)
    record, accepted = await b.runs.cancel(owned.run_id)
    result = _run_result(view(record))
    result.data["cancel_accepted"] = accepted
    note = "cancelling" if accepted else f"already {record.status}; nothing to cancel"
    result.text = f"{note}\n{result.text}"
    return result


def _run_result(run: Any) -> ToolResult:
    data = plain(run)
    cursor = encode_cursor(run.run_id, 1, 100) if run.status == "completed" else None
    data["next_cursor"] = cursor
    lines = [f"run {run.run_id} ({run.name or 'unnamed'}): {run.status}"]
    lines += [f"- {s.step_id}: {s.state}, {s.rows} rows" for s in run.steps]
    if run.error is not None:
        lines.append(f"error {run.error.code}: {run.error.message}")
    if cursor is not None:
        lines.append(f"{run.records_written} rows; read them: get_results with cursor {cursor!r}")
    return ToolResult(data, "\n".join(lines))


# -- the tool table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    summary: str
    args: type[msgspec.Struct]
    handler: Handler
    read_only: bool = False
    destructive: bool = False
    shapes: bool = False  # the description lists the body shapes of each language

    @functools.cached_property
    def decoder(self) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(self.args)

    def description(self) -> str:
        return self.summary + (language_shapes() if self.shapes else "")

    def input_schema(self) -> dict[str, Any]:
        return input_schema(self.args)


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "list_databases",
            "List databases",
            "The configured databases, a page at a time: name, type, whether it is reachable, "
            "and each table's columns. Start here to learn what can be queried.",
            ListDatabases,
            list_databases,
            read_only=True,
        ),
        Tool(
            "describe_table",
            "Describe a table",
            "One table's schema: its columns with their types and value distributions.",
            DescribeTable,
            describe,
            read_only=True,
        ),
        Tool(
            "query_simple",
            "Query one database",
            "Run one query on one database, in the database's own language, through sluice's "
            "safety pipeline (access rules, row caps, timeouts). `table` is the table the query "
            "reads; `language` may be omitted (the database's own is used); `dry_run` shows the "
            "checked and rewritten query without running it. A refused query comes back as an "
            "error naming the stage, the reason and what to change.",
            env.SimpleQueryRequest,
            query_simple,
            shapes=True,
        ),
        Tool(
            "query",
            "Federated query",
            "Run a DAG of steps across databases and merge them with DuckDB SQL over the step "
            "tables (named by step_id). A step may take its parent's values (`depends_on`, "
            "`link_from` the parent's column, `link_to` this step's column). The first rows "
            "come inline; the whole result is stored and `next_cursor` pages it with "
            "get_results.",
            FederatedQuery,
            query,
            shapes=True,
        ),
        Tool(
            "get_results",
            "Page a stored result",
            "A page of a stored federated result or completed run, in a stable order. Pass "
            "the `next_cursor` of the previous result, or a request_id (or run_id) with a page "
            "and size. Each page returns the next cursor until the last.",
            GetResults,
            get_results,
            read_only=True,
        ),
        Tool(
            "submit_run",
            "Submit a run",
            "Queue a long federated query as a background run. `config` is the `query` tool's "
            "body (steps and merge) as YAML text, JSON text (config_format json) or an object; "
            "it is checked now, then run; follow it with get_run. An idempotency_key makes a "
            "retry return the same run.",
            RunSubmit,
            submit_run,
        ),
        Tool(
            "get_run",
            "Get a run",
            "A run's status, steps and error; once completed, a cursor for get_results.",
            RunRef,
            get_run_tool,
            read_only=True,
        ),
        Tool(
            "cancel_run",
            "Cancel a run",
            "Cancel a queued or running run; a finished run is left as it is.",
            RunRef,
            cancel_run,
            destructive=True,
        ),
    )
}


def input_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The Struct's JSON schema as an MCP input schema: the object itself at the top (MCP
    wants `type: object` there), the Structs it refers to under `$defs`."""
    (_,), defs = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    top = dict(defs.pop(struct.__name__))
    top.pop("title", None)
    top.pop("description", None)  # the docstring names the REST route; the tool says it
    if defs:
        top["$defs"] = defs
    return top


@functools.cache
def language_shapes() -> str:
    """Per installed language (built-ins and plugins alike), the body shapes its language
    object gives as `examples`: written once, where the language is."""
    from safety.languages import registry

    lines = []
    for name in registry.names():
        examples = registry.get(name).examples
        if examples:
            lines.append(f"\n{name}:")
            lines += [f"  {e}" for e in examples]
    if not lines:
        return ""
    return "\n\nThe `query` field, per language (`language`):" + "\n".join(lines)
