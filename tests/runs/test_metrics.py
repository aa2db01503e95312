"""The metrics registry and middleware in-process: route templates, bounded labels, the
query-path functions, and pool gauges read from a real catalog at scrape time."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.metrics import Metrics, MetricsMiddleware, bind, query_finished, safety_blocked
from connectors.registry import database_config
from engine.catalog import Catalog
from tests.servers import PgServer


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        request.path_params["item_id"], status_code=201 if request.method == "POST" else 200
    )


async def test_requests_by_route_template_and_status() -> None:
    metrics = Metrics()
    app = Starlette(routes=[Route("/items/{item_id}", item, methods=["GET", "POST"])])
    transport = httpx.ASGITransport(app=MetricsMiddleware(app, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for i in range(3):
            assert (await c.get(f"/items/{i}")).status_code == 200
        await c.post("/items/9")
        await c.get("/random/path/1")
        await c.get("/random/path/2")
        await c.delete("/items/1")
        await c.request("BREW", "/items/1")
    value = metrics.registry.get_sample_value
    assert (
        value(
            "sluice_http_requests_total",
            {"method": "GET", "route": "/items/{item_id}", "status": "200"},
        )
        == 3
    )
    assert (
        value(
            "sluice_http_requests_total",
            {"method": "POST", "route": "/items/{item_id}", "status": "201"},
        )
        == 1
    )
    assert (
        value(
            "sluice_http_requests_total", {"method": "GET", "route": "<unmatched>", "status": "404"}
        )
        == 2
    )
    assert (
        value(
            "sluice_http_requests_total",
            {"method": "DELETE", "route": "/items/{item_id}", "status": "405"},
        )
        == 1
    )
    assert (
        value(
            "sluice_http_requests_total",
            {"method": "OTHER", "route": "/items/{item_id}", "status": "405"},
        )
        == 1
    )
    assert (
        value(
            "sluice_http_request_duration_seconds_count",
            {"method": "GET", "route": "/items/{item_id}"},
        )
        == 3
    )
    assert (
        value(
            "sluice_http_request_duration_seconds_bucket",
            {"method": "GET", "route": "/items/{item_id}", "le": "+Inf"},
        )
        == 3
    )
    assert value("sluice_http_requests_in_flight") == 0
    text = metrics.render().decode()
    assert "/random/path" not in text


def test_query_path_functions() -> None:
    metrics = Metrics()
    query_finished("pg", "sql", "ok", 120, metrics=metrics)
    query_finished("pg", "sql", "ok", 30, metrics=metrics)
    query_finished("pg", "sql", "error", metrics=metrics)
    safety_blocked("RBAC_GATE", metrics=metrics)
    value = metrics.registry.get_sample_value
    assert (
        value("sluice_queries_total", {"database": "pg", "language": "sql", "outcome": "ok"}) == 2
    )
    assert (
        value("sluice_queries_total", {"database": "pg", "language": "sql", "outcome": "error"})
        == 1
    )
    assert value("sluice_rows_streamed_total", {"database": "pg"}) == 150
    assert value("sluice_safety_blocks_total", {"stage": "RBAC_GATE"}) == 1


async def test_pool_gauges_read_the_catalog(pg_server: PgServer) -> None:
    import anyio

    db = database_config(
        name="pg",
        type="postgresql",
        host=pg_server.host,
        port=pg_server.port,
        database=pg_server.database,
        user=pg_server.user,
        pool_size=3,
    )
    catalog = Catalog([db], ttl_seconds=60, max_concurrent_queries=8)
    metrics = Metrics()
    bind(catalog, None, metrics=metrics)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: catalog.serve(task_status=task_status))
            value = metrics.registry.get_sample_value
            assert value("sluice_db_pool_size", {"database": "pg"}) == 3
            assert value("sluice_db_reachable", {"database": "pg"}) == 1
            assert value("sluice_db_pool_in_use", {"database": "pg"}) == 0
            assert value("sluice_result_store_bytes") == 0
            tg.cancel_scope.cancel()
    finally:
        await catalog.close()
