"""MongoDB batches through the engine's DuckDB sink: evolving columns and types land as
declared (the contract `Batch.columns` promises the sink), on the row and the Arrow path."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import anyio
import pytest
from bson import ObjectId

from connectors.base import Statement
from connectors.mongo import MongoConnector
from engine.sink import Message, Sink

pytestmark = pytest.mark.mongodb


@pytest.mark.parametrize("bulk", [False, True], ids=["rows", "arrow"])
async def test_mongo_batches_land_in_duckdb_with_their_types(
    connector: MongoConnector, mdb: Any, bulk: bool
) -> None:
    oid = ObjectId()
    at = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    await mdb.events.insert_many(
        [
            {"_id": oid, "n": 1, "at": at},
            {"n": 2, "score": 0.5},
            {"n": 3, "meta": {"tags": ["x", "y"], "depth": 2}},
            {"n": 4, "label": "four", "score": 1.5},
        ]
    )
    statement = Statement(
        json.dumps({"operation": "find", "sort": {"n": 1}}),
        options={"collection": "events"},
        batch_size=2,
        bulk=bulk,
    )
    batches = [b async for b in connector.stream(statement)]
    assert len(batches) == 2 and len(batches[1].columns) > len(batches[0].columns)

    sink = Sink(threads=1, memory_limit="256MB")
    tables = await sink.open_request("req_test")
    try:
        send, receive = anyio.create_memory_object_stream[Message](4)
        async with anyio.create_task_group() as tg:
            await tg.start(tables.serve, receive)
            async with send:
                for batch in batches:
                    await send.send(("s", batch))
                await send.send(("s", None))
        name = tables.table_name("s")
        types = dict(
            tables.run(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = '{tables.schema}' AND table_name = 's'"
            )
        )
        assert types == {
            "_id": "VARCHAR",
            "n": "BIGINT",
            "at": "TIMESTAMP WITH TIME ZONE",
            "score": "DOUBLE",
            "meta": "JSON",
            "label": "VARCHAR",
        }
        rows = tables.run(f"SELECT n, _id, score, meta->>'$.depth', label FROM {name} ORDER BY n")
        assert rows[0][:2] == (1, str(oid))
        assert [r[2] for r in rows] == [None, 0.5, None, 1.5]
        assert [r[3] for r in rows] == [None, None, "2", None]
        assert rows[3][4] == "four"
        stored_at = tables.run(f'SELECT epoch("at") FROM {name} WHERE n = 1')[0][0]
        assert stored_at == at.timestamp()
    finally:
        await tables.drop()
        sink.close()
