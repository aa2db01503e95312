"""Failures at the wire: unreachable servers, a connection dropped mid-cursor, time limits,
and cancellation. `mockupdb` scripts the server's exact replies (see conftest.py)."""

from __future__ import annotations

import asyncio
import decimal
import gc
import json
import socket
import time
import uuid
import warnings
from typing import Any

import anyio
import pytest
from bson import Binary, Decimal128, Int64
from bson.datetime_ms import DatetimeMS

from connectors.base import Batch, Statement
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.mongo import MongoConnector
from connectors.registry import database_config
from tests.mongo.conftest import Wire

pytestmark = pytest.mark.mongodb

FIND = json.dumps({"operation": "find", "filter": {"k": {"$gte": 0}}})


def mock_connector(server: Wire, **kw: Any) -> MongoConnector:
    return MongoConnector(database_config(name="mock", type="mongodb", dsn=f"{server.uri}/d", **kw))


def first_batch(cursor_id: int, docs: list[dict[str, Any]]) -> Any:
    def reply(request: Any) -> bool:
        return bool(request.reply(cursor={"id": Int64(cursor_id), "ns": "d.c", "firstBatch": docs}))

    return reply


def recorder(seen: list[dict[str, Any]], then: Any) -> Any:
    def handle(request: Any) -> bool:
        seen.append(dict(request.doc))
        return bool(then(request))

    return handle


def hang_up(request: Any) -> bool:
    request.hangup()
    # mockupdb's hangup() only shuts the socket down; close it so it is not leaked
    request._client.close()
    return True


async def test_unreachable_server_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    conn = MongoConnector(
        database_config(
            name="down",
            type="mongodb",
            host="127.0.0.1",
            port=port,
            database="d",
            connect_timeout_seconds=0.5,
        )
    )
    started = time.monotonic()
    with pytest.raises(ConnectorUnavailable, match="down"):
        await conn.open()
    assert time.monotonic() - started < 5
    with pytest.raises(ConnectorUnavailable, match="not open"):
        [b async for b in conn.stream(Statement(FIND, options={"collection": "c"}))]
    await conn.close()  # safe after a failed open


async def test_missing_database_name_is_a_clear_error(wire: Wire) -> None:
    conn = MongoConnector(database_config(name="m", type="mongodb", dsn=wire.uri))
    with pytest.raises(ConnectorUnavailable, match="no database"):
        await conn.open()


# After a dropped connection PyMongo's monitor reconnects; closing the client cancels that
# handshake and PyMongo 4.20 leaves its socket to the garbage collector (a ResourceWarning
# from pymongo/pool_shared.py, not from sluice). Collected here, inside this test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_connection_dropped_mid_cursor(wire: Wire) -> None:
    wire.on("find", first_batch(77, [{"k": 1}, {"k": 2}]))
    wire.on("getMore", hang_up)
    conn = mock_connector(wire)
    await conn.open()
    got: list[Batch] = []
    try:
        with anyio.fail_after(10):  # never a hang
            with pytest.raises((ConnectorUnavailable, QueryFailed), match="connection"):
                statement = Statement(FIND, batch_size=2, options={"collection": "c"})
                async for batch in conn.stream(statement):
                    got.append(batch)
    finally:
        await conn.close()
        await anyio.sleep(0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert [b.rows for b in got] == [[(1,), (2,)]]


async def test_server_max_time_ms_expired_is_a_timeout(wire: Wire) -> None:
    seen: list[dict[str, Any]] = []

    def slow(request: Any) -> bool:
        time.sleep(0.3)  # the server works past maxTimeMS, then gives up
        return bool(request.command_err(code=50, errmsg="operation exceeded time limit"))

    wire.on("find", recorder(seen, slow))
    conn = mock_connector(wire)
    await conn.open()
    body = json.dumps({"operation": "find", "filter": {}, "maxTimeMS": 200})
    try:
        with pytest.raises(QueryTimedOut) as err:
            [b async for b in conn.stream(Statement(body, timeout=5, options={"collection": "c"}))]
    finally:
        await conn.close()
    assert err.value.code == "query_timeout"
    # the lower of the body's maxTimeMS and the statement's timeout went to the server
    assert seen[0]["maxTimeMS"] == 200


async def test_statement_timeout_sets_max_time_ms_and_client_deadline(
    wire: Wire,
) -> None:
    seen: list[dict[str, Any]] = []
    wire.on("find", recorder(seen, lambda r: True))  # never replies
    conn = mock_connector(wire)
    await conn.open()
    started = time.monotonic()
    try:
        with pytest.raises(QueryTimedOut):
            statement = Statement(FIND, timeout=0.4, options={"collection": "c"})
            [b async for b in conn.stream(statement)]
    finally:
        await conn.close()
    assert seen[0]["maxTimeMS"] == 400
    assert time.monotonic() - started < 5


async def _tasks() -> set[asyncio.Task[Any]]:
    await anyio.sleep(0.05)
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_cancelled_while_waiting_for_get_more_kills_the_cursor(
    wire: Wire,
) -> None:
    wire.on("find", first_batch(4242, [{"k": 1}]))
    wire.on("getMore", lambda r: True)  # the next batch never comes
    conn = mock_connector(wire)
    await conn.open()
    before = await _tasks()
    got: list[Batch] = []
    try:
        with anyio.move_on_after(0.5) as scope:
            statement = Statement(FIND, batch_size=1, timeout=30, options={"collection": "c"})
            async for batch in conn.stream(statement):
                got.append(batch)
        assert scope.cancelled_caught and len(got) == 1
        # killed before the cancellation left the stream, not later by a finaliser
        assert 4242 in wire.killed
        assert await _tasks() <= before  # nothing left running
    finally:
        await conn.close()


async def test_consumer_that_stops_early_closes_the_cursor(wire: Wire) -> None:
    wire.on("find", first_batch(99, [{"k": 1}, {"k": 2}]))
    conn = mock_connector(wire)
    await conn.open()
    try:
        stream = conn.stream(Statement(FIND, batch_size=2, options={"collection": "c"}))
        first = await stream.__anext__()
        assert len(first) == 2
        await stream.aclose()
        assert 99 in wire.killed
    finally:
        await conn.close()


async def test_max_rows_reached_closes_the_cursor(wire: Wire) -> None:
    seen: list[dict[str, Any]] = []
    wire.on("find", recorder(seen, first_batch(5, [{"k": 1}, {"k": 2}])))
    conn = mock_connector(wire)
    await conn.open()
    try:
        statement = Statement(FIND, batch_size=10, max_rows=2, options={"collection": "c"})
        batches = [b async for b in conn.stream(statement)]
    finally:
        await conn.close()
    assert [len(b) for b in batches] == [2]
    assert seen[0]["limit"] == 2  # the fetch cap travels as find's limit
    assert 5 in wire.killed


async def test_types_nx_cannot_store_arrive_typed_over_the_wire(wire: Wire) -> None:
    """Decimal128, UUID (binary subtype 4) and out-of-range dates, as a real server sends
    them: the client's codec options decide how they decode (nx-27017 cannot store them)."""
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    docs = [{"d": Decimal128("12.5"), "u": Binary(uid.bytes, 4), "far": DatetimeMS(2**62)}]
    wire.on("find", first_batch(0, docs))
    conn = mock_connector(wire)
    await conn.open()
    try:
        for bulk in (False, True):
            statement = Statement(FIND, bulk=bulk, options={"collection": "c"})
            (batch,) = [b async for b in conn.stream(statement)]
            assert [(c.name, c.type) for c in batch.columns] == [
                ("d", "DECIMAL(38,10)"),
                ("u", "UUID"),
                ("far", "VARCHAR"),
            ]
            row = (
                batch.rows[0]
                if batch.rows is not None
                else tuple(batch.arrow.to_pylist()[0].values())
            )
            assert row[0] == decimal.Decimal("12.5")
            assert row[1] in (uid, str(uid))  # Arrow carries UUIDs as text for the sink
            assert row[2] == str(2**62)
    finally:
        await conn.close()
