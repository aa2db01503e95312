"""Unauthenticated probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import Literal

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api import metrics as m
from api.routes import Endpoint
from engine.runs import RunManager


class ReadyResponse(msgspec.Struct, kw_only=True):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class LiveResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


# -- ops --------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    state = request.app.state
    checks: dict[str, str] = {}
    checks["config"] = "ok" if getattr(state, "config", None) is not None else "missing"
    runs: RunManager | None = getattr(state, "runs", None)
    if runs is None:
        checks["run_store"] = "not started"
    elif runs.draining:
        checks["run_store"] = "draining"
    else:
        try:
            with anyio.fail_after(2):
                await runs.store.expire_keys()  # a write: the store accepts writes
            checks["run_store"] = "ok"
        except Exception as exc:  # any failure means not ready
            checks["run_store"] = f"error: {type(exc).__name__}: {exc}"
    service = getattr(state, "service", None)
    results = getattr(service, "store", None)
    if results is None:
        checks["result_store"] = "not started"
    else:
        checks["result_store"] = await results.ready()
    catalog = getattr(state, "catalog", None)
    reachable = catalog.reachable_count if catalog is not None else 0
    total = len(catalog.names()) if catalog is not None else 0
    checks["databases"] = f"{reachable}/{total} reachable"
    ready = all(v == "ok" for k, v in checks.items() if k != "databases") and reachable > 0
    body = ReadyResponse(status="ready" if ready else "not_ready", checks=checks)
    return Response(
        msgspec.json.encode(body), status_code=200 if ready else 503, media_type="application/json"
    )


async def metrics_endpoint(request: Request) -> Response:
    return Response(m.METRICS.render(), media_type=m.CONTENT_TYPE)


OPS_ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/healthz", healthz, "Liveness: the process answers.", response=LiveResponse),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "Readiness: config loaded, stores writable, a database reachable, not draining.",
        response=ReadyResponse,
        errors=(503,),
    ),
    Endpoint("GET", "/metrics", metrics_endpoint, "Prometheus metrics (text exposition)."),
]
