"""A real server process with the run control plane wired in: the lead's create_app when
api/app.py already wires runs (`python -m sluice.cli serve`), else this module's own
wiring, which is exactly the change proposed for api/app.py and api/server.py:

- the lifespan builds the RunManager after the service, starts it with `tg.start`, and on
  shutdown calls `await runs.drain()` BEFORE cancelling the task group;
- MetricsMiddleware wraps the app inside RequestIdMiddleware;
- SIGTERM first drains (stop admitting, /readyz 503, SSE streams end, running runs get the
  grace period), then hypercorn stops: hypercorn otherwise closes the listener and waits on
  open connections before the lifespan hears of the shutdown.

Run: python -m tests.runs.harness --config sluice.yaml --port 8787
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from api import metrics
from api.app import http_error
from api.envelopes import ENCODER
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from api.openapi import build_openapi
from api.ops_routes import OPS_ENDPOINTS
from api.routes import ENDPOINTS, routes
from api.runs_routes import RUN_ENDPOINTS, build_run_manager
from api.service import build_service
from engine.config import Config, load_config

APP_PY = Path(__file__).resolve().parents[2] / "api" / "app.py"


def lead_wired() -> bool:
    """True once api/app.py wires the run manager (then tests use `sluice serve`)."""
    return "build_run_manager" in APP_PY.read_text()


def build_app(config: Config) -> tuple[ASGIApp, Starlette]:
    endpoints = ENDPOINTS + RUN_ENDPOINTS + OPS_ENDPOINTS
    Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = build_service(config)
        app.state.service = service
        app.state.catalog = service.catalog
        runs = app.state.runs = build_run_manager(config, service)
        metrics.bind(service.catalog, service.store)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(lambda task_status: service.catalog.serve(task_status=task_status))
                await tg.start(runs.serve)
                yield
                await runs.drain()
                tg.cancel_scope.cancel()
        finally:
            await service.catalog.close()
            service.close()

    app = Starlette(
        routes=routes(endpoints), lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.config = config
    app.state.openapi = ENCODER.encode(build_openapi(endpoints))
    wrapped: ASGIApp = BodyLimitMiddleware(app, config.server.body_limit_bytes)
    wrapped = metrics.MetricsMiddleware(wrapped)
    return RequestIdMiddleware(wrapped), app


async def serve(config_path: str, host: str, port: int) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config as HypercornConfig

    asgi, app = build_app(load_config(config_path))
    hc = HypercornConfig()
    hc.bind = [f"{host}:{port}"]
    hc.graceful_timeout = 5

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        runs = getattr(app.state, "runs", None)
        if runs is not None:
            await runs.drain()

    await hypercorn_serve(asgi, hc, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    anyio.run(serve, args.config, args.host, args.port)


if __name__ == "__main__":
    main()
