"""create_app(config): the Starlette app. The lifespan opens every database (unreachable ones
are listed and retried, never fatal), starts the audit writer, and closes it all on exit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from api import heap, metrics
from api.envelopes import ENCODER, ErrorBody, ErrorEnvelope
from api.front import Front
from api.mcp_server import McpHttp
from api.middleware import request_id_of
from api.openapi import build_openapi
from api.ops_routes import OPS_ENDPOINTS
from api.responses import MsgspecResponse
from api.routes import ENDPOINTS, Endpoint, routes
from api.run_execution import build_run_manager
from api.runs_routes import RUN_ENDPOINTS
from api.service import QueryService
from engine.config import Config
from engine.offload import responsive_loop
from engine.runtime import Runtime

log = logging.getLogger("sluice.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Framework errors (unknown route, wrong method...) as the same JSON envelope."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail
    suggestion = None
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
        suggestion = "GET /openapi.json lists every route"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    body = ErrorEnvelope(
        request_id=request_id_of(request.scope),
        status="error",
        error=ErrorBody(code=code, message=str(message), suggestion=suggestion),
    )
    return MsgspecResponse(body, status_code=exc.status_code, headers=exc.headers)


def build_app(
    config: Config, *, startup_wait: float | None = None, endpoints: list[Endpoint] | None = None
) -> tuple[ASGIApp, Starlette]:
    """The middleware-wrapped ASGI app, and the Starlette app inside it (its `state` holds
    the service and the run manager, which the server's SIGTERM handler drains)."""
    endpoints = endpoints if endpoints is not None else [*ENDPOINTS, *RUN_ENDPOINTS, *OPS_ENDPOINTS]
    Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)
    mcp = McpHttp(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime_ = Runtime(config, on_audit_drop=metrics.audit_dropped)
        try:
            with responsive_loop():
                async with runtime_.running(startup_wait=startup_wait) as runtime:
                    service = app.state.service = QueryService(runtime)
                    app.state.catalog = runtime.catalog
                    runs = app.state.runs = build_run_manager(config, service)
                    metrics.bind(runtime.catalog, runtime.store)
                    async with anyio.create_task_group() as tg:
                        await tg.start(runs.serve)
                        heap.settle()
                        async with mcp.running():
                            yield
                        await runs.drain()  # before cancelling: running runs get their grace period
                        tg.cancel_scope.cancel()
        finally:
            metrics.METRICS.process_exited()

    app = Starlette(
        routes=[*routes(endpoints), mcp.route],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.config = config
    app.state.openapi = ENCODER.encode(build_openapi(endpoints))

    return Front(app, config), app


def create_app(
    config: Config, *, startup_wait: float | None = None, endpoints: list[Endpoint] | None = None
) -> ASGIApp:
    return build_app(config, startup_wait=startup_wait, endpoints=endpoints)[0]
