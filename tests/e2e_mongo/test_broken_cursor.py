"""A cursor broken mid-stream, seen over HTTP: a `sluice serve` whose MongoDB is a scripted
mockupdb server that answers the first batch of a find and hangs up on getMore."""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from bson import Int64

from tests.api.conftest import Server, start_server, stop_server
from tests.helpers import assert_error_envelope
from tests.mongo.conftest import Wire

pytestmark = pytest.mark.mongodb

DOCS = [{"_id": i, "k": i} for i in range(3)]
GET_MORES: list[dict[str, Any]] = []


def cursor(docs: list[dict[str, Any]], cursor_id: int = 0, ns: str = "d.c") -> Any:
    def reply(request: Any) -> bool:
        return bool(request.reply(cursor={"id": Int64(cursor_id), "ns": ns, "firstBatch": docs}))

    return reply


def hang_up(request: Any) -> bool:
    request.hangup()
    request._client.close()  # hangup() only shuts the socket down
    return True


@pytest.fixture
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Wire]]:
    wire = Wire()
    # discovery: one collection `c`, a count and a sample; then the find that breaks
    wire.on(
        "listCollections",
        cursor(
            [{"name": "c", "type": "collection", "options": {}, "info": {"readOnly": False}}],
            ns="d.$cmd.listCollections",
        ),
    )
    wire.on("count", lambda r: bool(r.ok(n=len(DOCS))))
    wire.on("aggregate", cursor(DOCS))
    wire.on("find", cursor(DOCS[:2], cursor_id=77))
    wire.on("getMore", lambda r: GET_MORES.append(dict(r.doc)) or hang_up(r))
    wire.server.run()
    config = f"""\
databases:
  - name: mock
    type: mongodb
    dsn: {wire.uri}/d
    query_timeout_seconds: 5
permissions:
  default:
    mock:
      level: R
"""
    srv = start_server(config, tmp_path_factory.mktemp("broken_cursor"))
    try:
        yield srv, wire
    finally:
        stop_server(srv)
        wire.stop()
        # mockupdb leaves the sockets of connections still open at stop() to the garbage
        # collector; collect them here rather than as a ResourceWarning in a later test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def test_connection_dropped_mid_cursor_is_an_error_not_a_partial_result(
    broken: tuple[Server, Wire],
) -> None:
    srv, _ = broken
    GET_MORES.clear()
    query = json.dumps({"operation": "find", "filter": {"k": {"$gte": 0}}})
    started = time.monotonic()
    with srv.client() as c:
        r = c.post("/v1/query/simple", json={"database": "mock", "table": "c", "query": query})
    assert time.monotonic() - started < 15  # never a hang
    body = assert_error_envelope(r, 503, "database_unavailable")
    assert "connection" in body["error"]["message"]  # "closed" or "lost", by timing
    assert "rows" not in r.text  # the first batch did not slip out as a partial result
    # it broke mid-stream: the first batch was served and the getMore for cursor 77 dropped
    assert [int(g["getMore"]) for g in GET_MORES] == [77]
    # the server is still serving afterwards
    assert httpx.get(f"{srv.url}/v1/health", timeout=10).status_code < 500
