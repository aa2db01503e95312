"""The MCP server (the official SDK's low-level `Server`) over the tools of api/mcp_tools.py,
with each configured database's schema as a resource. Two transports:

- streamable HTTP at `/mcp` on the running server (`McpHttp`): the request passes the same
  middleware as REST first (request id, body limit, bearer token -> principal, rate limit),
  and the tools find the service and run manager in `app.state`;
- stdio (`serve_stdio`, the `sluice mcp` command), with its own service and run manager.

Every tool call is audited by QueryService like a REST query, with transport `mcp/http` or
`mcp/stdio`; a refusal is a tool error carrying the REST error envelope."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import msgspec
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.routing import Route

from api.envelopes import ENCODER
from api.errors import ApiError, envelope_for
from api.mcp_tools import TOOLS, Backend, ToolResult, mcp_viewer, plain
from api.middleware import client_host, new_request_id, request_id_of
from api.routes import Viewer, database_page
from api.service import RequestContext
from api.version import VERSION

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger("sluice.mcp")

RESOURCE_PREFIX = "sluice://databases/"
INSTRUCTIONS = (
    "sluice runs read (and, where granted, write) queries on the configured databases through "
    "a safety pipeline. Read a database's schema resource or call list_databases first; query "
    "one database with query_simple, several with query (merged in DuckDB SQL); page large "
    "results with get_results and the next_cursor you are given. A refused query is an error "
    "naming the stage, the reason and a suggestion: change the query accordingly."
)


def tool_list() -> list[types.Tool]:
    return [
        types.Tool(
            name=t.name,
            title=t.title,
            description=t.description(),
            input_schema=t.input_schema(),
            annotations=types.ToolAnnotations(
                title=t.title,
                read_only_hint=t.read_only,
                destructive_hint=t.destructive,
                open_world_hint=False,
            ),
        )
        for t in TOOLS.values()
    ]


def success(result: ToolResult) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=result.text)], structured_content=result.data
    )


def failure(exc: Exception, request_id: str) -> types.CallToolResult:
    """The REST envelope of the failure (403 blocked, 400, 404...) as a tool error, so the
    agent reads what was wrong and what to do, and can correct itself."""
    status, envelope, _ = envelope_for(exc, request_id)
    data = plain(envelope)
    err = data["error"]
    if data["status"] == "blocked":
        text = f"blocked by {err['stage']}: {err['reason']}"
    else:
        if err.get("code") == "invalid_body":
            err["suggestion"] = "see the tool's input schema"
        text = f"error {err['code']}: {err['message']}"
    if err.get("suggestion"):
        text += f"\nsuggestion: {err['suggestion']}"
    data["http_status"] = status
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=data, is_error=True
    )


async def call_tool(
    backend: Backend, ctx: RequestContext, name: str, arguments: dict[str, Any] | None
) -> types.CallToolResult:
    tool = TOOLS.get(name)
    try:
        if tool is None:
            raise ApiError(
                404,
                "unknown_tool",
                f"no tool {name!r}",
                suggestion=f"use one of {', '.join(TOOLS)}",
            )
        raw = msgspec.json.encode(arguments or {})
        ctx.body_bytes = len(raw)
        args = tool.decoder.decode(raw)
        return success(await tool.handler(backend, args, ctx))
    except Exception as exc:
        return failure(exc, ctx.request_id)


def resource_list(backend: Backend, viewer: Viewer) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[
            types.Resource(
                uri=f"{RESOURCE_PREFIX}{state.config.name}",
                name=state.config.name,
                title=f"{state.config.name} ({state.config.type}) schema",
                description=f"Tables and columns of the {state.config.type} database "
                f"{state.config.name!r}, with value distributions",
                mime_type="application/json",
            )
            for state in backend.service.catalog.states.values()
            if viewer.sees_database(state.config.name)
        ]
    )


def read_resource(backend: Backend, uri: str, viewer: Viewer) -> types.ReadResourceResult:
    catalog = backend.service.catalog
    name = uri.removeprefix(RESOURCE_PREFIX) if uri.startswith(RESOURCE_PREFIX) else None
    names = [n for n in catalog.names() if viewer.sees_database(n)]
    if name is None or name not in names:
        raise MCPError(
            -32002,  # the spec's "resource not found"
            f"no resource {uri!r}",
            {"resources": [f"{RESOURCE_PREFIX}{n}" for n in names]},
        )
    page = database_page(catalog, names.index(name) + 1, 1, viewer)
    return types.ReadResourceResult(
        contents=[
            types.TextResourceContents(
                uri=uri,
                mime_type="application/json",
                text=ENCODER.encode(page.databases[0]).decode(),
            )
        ]
    )


def build_server(
    backend_of: Callable[[ServerRequestContext[Any, Any]], Backend],
    context_of: Callable[[ServerRequestContext[Any, Any]], RequestContext],
) -> Server[Any]:
    """The MCP server; `backend_of` and `context_of` say, per request, which service to call
    and who is asking (they differ between HTTP and stdio)."""
    tools = tool_list()

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await call_tool(backend_of(ctx), context_of(ctx), params.name, params.arguments)

    async def on_list_resources(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        backend = backend_of(ctx)
        return resource_list(backend, mcp_viewer(backend, context_of(ctx)))

    async def on_read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        backend = backend_of(ctx)
        return read_resource(backend, str(params.uri), mcp_viewer(backend, context_of(ctx)))

    schemas = {t.name: t.input_schema for t in tools}
    server: Server[Any] = Server(
        "sluice",
        version=VERSION,
        title="sluice",
        instructions=INSTRUCTIONS,
        # checks Mcp-Param-* headers against this instead of calling tools/list per call
        get_tool_input_schema=schemas.get,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_read_resource=on_read_resource,
    )
    # the SDK's OpenTelemetry span per message (a no-op without an exporter) cost ~6% of a
    # tool call in the profile; requests are counted by api/metrics.py like REST ones
    server.middleware = []
    return server


# -- streamable HTTP on the running server ----------------------------------------------------
def _http_request(ctx: ServerRequestContext[Any, Any]) -> Request:
    """The HTTP request that carried this message (the SDK attaches it on HTTP)."""
    request = ctx.request
    if not isinstance(request, Request):
        raise RuntimeError("an MCP request over HTTP without its HTTP request")
    return request


def _http_backend(ctx: ServerRequestContext[Any, Any]) -> Backend:
    state = _http_request(ctx).app.state
    return Backend(state.service, state.runs)


def _http_context(ctx: ServerRequestContext[Any, Any]) -> RequestContext:
    scope = _http_request(ctx).scope
    return RequestContext(
        request_id=request_id_of(scope),
        principal=scope.get("state", {}).get("principal"),
        transport="mcp/http",
        client=client_host(scope),
    )


class McpHttp:
    """`/mcp` on the app: a route for the route table and a context manager for the app's
    lifespan (the SDK's session manager runs inside it)."""

    PATH = "/mcp"

    def __init__(self, config: Config) -> None:
        security = None
        if not config.auth.tokens:
            # No tokens: any page in a local browser could reach a loopback server, so the
            # Host and Origin must be loopback ones (DNS rebinding).
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        self.server = build_server(_http_backend, _http_context)
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            stateless=True,
            security_settings=security,
            max_request_body_size=config.server.body_limit_bytes,
        )
        self.route = Route(self.PATH, StreamableHTTPASGIApp(self.manager), methods=None)

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.manager.run()


# -- stdio ------------------------------------------------------------------------------------
async def serve_stdio(config: Config, *, principal: str | None = None) -> None:
    """`sluice mcp`: the service and run manager in this process, MCP on stdin/stdout."""
    from mcp.server.stdio import stdio_server

    from api.local import open_service
    from api.run_execution import build_run_manager

    async with open_service(config, principal=principal) as session:
        service = session.service
        runs = build_run_manager(config, service)
        backend = Backend(service, runs)

        def context_of(ctx: ServerRequestContext[Any, Any]) -> RequestContext:
            return RequestContext(
                request_id=new_request_id(), principal=principal, transport="mcp/stdio"
            )

        server = build_server(lambda ctx: backend, context_of)
        async with anyio.create_task_group() as tg:
            await tg.start(runs.serve)
            try:
                async with stdio_server() as (read, write):
                    await server.run(read, write, server.create_initialization_options())
            finally:
                with anyio.CancelScope(shield=True):
                    await runs.drain()
                tg.cancel_scope.cancel()
