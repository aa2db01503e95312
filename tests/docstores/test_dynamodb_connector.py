"""The DynamoDB connector against a real (moto) DynamoDB server: every verb, each read
compared with what the plain client gets for the same request, writes read back, paging, the
row cap, typed values, links and discovery."""

from __future__ import annotations

import contextlib
import decimal
import json
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from connectors.base import Batch, LinkFilter, Statement
from connectors.dynamodb import DynamoDBConnector, DynamoDBSettings
from connectors.dynamodb_items import to_document
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from tests.docstores.conftest import DYNAMO_ENV

pytestmark = pytest.mark.dynamodb


def settings(endpoint: str, **kw: Any) -> DynamoDBSettings:
    return DynamoDBSettings(
        name="dyn",
        endpoint_url=endpoint,
        region=DYNAMO_ENV["region_name"],
        aws_access_key_id=DYNAMO_ENV["aws_access_key_id"],
        aws_secret_access_key=DYNAMO_ENV["aws_secret_access_key"],
        max_attempts=1,
        **kw,
    )


@pytest.fixture
async def connector(dynamo_endpoint: str) -> Any:
    conn = DynamoDBConnector(settings(dynamo_endpoint))
    await conn.open()
    try:
        yield conn
    finally:
        await conn.close()


def person(i: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": {"S": f"p{i:03d}"},
        "age": {"N": str(20 + i % 30)},
        "group": {"N": str(i % 7)},
        "name": {"S": f"user{i}"},
        "price": {"N": f"{i}.25"},
        "active": {"BOOL": i % 2 == 0},
        "tags": {"SS": ["b", "a"]},
        "address": {"M": {"city": {"S": "Oslo"}, "zip": {"N": str(i)}}},
    }
    if i % 10 == 0:
        item["blob"] = {"B": b"\x00\x01"}
        item["nothing"] = {"NULL": True}
    return item


async def make_table(client: Any, name: str, key: str = "id", key_type: str = "S", sort=None):
    schema = [{"AttributeName": key, "KeyType": "HASH"}]
    attrs = [{"AttributeName": key, "AttributeType": key_type}]
    if sort:
        schema.append({"AttributeName": sort, "KeyType": "RANGE"})
        attrs.append({"AttributeName": sort, "AttributeType": "S"})
    await client.create_table(
        TableName=name, KeySchema=schema, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )


async def seed(client: Any, table: str, items: list[dict[str, Any]]) -> None:
    for at in range(0, len(items), 25):
        reqs = [{"PutRequest": {"Item": it}} for it in items[at : at + 25]]
        answer = await client.batch_write_item(RequestItems={table: reqs})
        assert not answer.get("UnprocessedItems")


@pytest.fixture
async def people(dynamo: Any, table_name: str) -> str:
    await make_table(dynamo, table_name)
    await seed(dynamo, table_name, [person(i) for i in range(60)])
    return table_name


def stmt(table: str, body: dict[str, Any], **kw: Any) -> Statement:
    return Statement(json.dumps(body), options={"collection": table}, **kw)


async def collect(conn: DynamoDBConnector, statement: Statement) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for batch in conn.stream(statement):
        rows.extend(as_dicts(batch))
    return rows


def as_dicts(batch: Batch) -> list[dict[str, Any]]:
    names = [c.name for c in batch.columns]
    if batch.arrow is not None:
        return batch.arrow.to_pylist()
    return [dict(zip(names, r, strict=True)) for r in batch.rows or []]


def native(item: dict[str, Any]) -> dict[str, Any]:
    """What the client's own deserialiser says, in the connector's row shape."""
    d = TypeDeserializer()
    out = {}
    for k, v in item.items():
        value = d.deserialize(v)
        if isinstance(value, decimal.Decimal):
            value = int(value) if value == value.to_integral_value() else value
        elif isinstance(value, set):
            value = sorted(value)
        elif isinstance(value, dict):
            value = {
                kk: int(vv) if isinstance(vv, decimal.Decimal) else vv for kk, vv in value.items()
            }
        elif hasattr(value, "value"):
            value = bytes(value.value)
        out[k] = value
    return out


def same(rows: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Rows equal the client's items: every attribute the item has, and nothing else set."""
    want = sorted((native(i) for i in items), key=lambda d: d["id"])
    got = sorted(rows, key=lambda d: d["id"])
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if v is not None} == {
            k: v for k, v in w.items() if v is not None
        }


async def test_get_item_returns_the_item(connector, dynamo, people):
    want = (await dynamo.get_item(TableName=people, Key={"id": {"S": "p010"}}))["Item"]
    rows = await collect(connector, stmt(people, {"verb": "GetItem", "Key": {"id": {"S": "p010"}}}))
    same(rows, [want])
    assert rows[0]["blob"] == b"\x00\x01" and rows[0]["price"] == decimal.Decimal("10.25")
    none = await collect(connector, stmt(people, {"verb": "GetItem", "Key": {"id": {"S": "zz"}}}))
    assert none == []


async def test_scan_pages_to_the_cap_and_matches_the_client(connector, dynamo, people):
    body = {
        "verb": "Scan",
        "FilterExpression": "#g = :g",
        "ExpressionAttributeNames": {"#g": "group"},
        "ExpressionAttributeValues": {":g": {"N": "3"}},
    }
    want = (await dynamo.scan(TableName=people, **{k: v for k, v in body.items() if k != "verb"}))[
        "Items"
    ]
    assert len(want) == 9
    same(await collect(connector, stmt(people, body, batch_size=4)), want)
    # the cap (max_rows) and the body's Limit both bound the total, across pages
    assert (
        len(await collect(connector, stmt(people, {"verb": "Scan"}, max_rows=13, batch_size=5)))
        == 13
    )
    assert len(await collect(connector, stmt(people, {"verb": "Scan", "Limit": 7}))) == 7
    assert len(await collect(connector, stmt(people, {"verb": "Scan"}, batch_size=8))) == 60
    rows = await collect(connector, stmt(people, {"verb": "Scan", "Select": "COUNT"}))
    assert rows == [{"count": 60}]


async def test_query_and_partiql_select(connector, dynamo, table_name):
    await make_table(dynamo, table_name, key="customer", sort="order")
    items = [
        {"customer": {"S": f"c{c}"}, "order": {"S": f"o{o:02d}"}, "total": {"N": str(o * 10)}}
        for c in range(3)
        for o in range(12)
    ]
    await seed(dynamo, table_name, items)
    body = {
        "verb": "Query",
        "KeyConditionExpression": "customer = :c AND #o > :o",
        "ExpressionAttributeNames": {"#o": "order"},
        "ExpressionAttributeValues": {":c": {"S": "c1"}, ":o": {"S": "o03"}},
    }
    want = (
        await dynamo.query(TableName=table_name, **{k: v for k, v in body.items() if k != "verb"})
    )["Items"]
    rows = await collect(connector, stmt(table_name, body, batch_size=3))
    assert rows == [to_document(i) for i in want] and len(rows) == 8
    assert [r["order"] for r in rows] == sorted(r["order"] for r in rows)
    body = {
        "verb": "ExecuteStatement",
        "Statement": f'SELECT * FROM "{table_name}" WHERE customer = ?',
        "Parameters": [{"S": "c2"}],
    }
    want = (
        await dynamo.execute_statement(Statement=body["Statement"], Parameters=body["Parameters"])
    )["Items"]
    rows = await collect(connector, stmt(table_name, body))
    assert sorted(rows, key=str) == sorted((to_document(i) for i in want), key=str)
    assert len(rows) == 12


async def test_batch_get_transact_get_and_describe(connector, dynamo, people, table_name):
    other = table_name + "_b"
    await make_table(dynamo, other)
    await seed(dynamo, other, [{"id": {"S": "x1"}, "v": {"N": "1"}}])
    body = {
        "verb": "BatchGetItem",
        "RequestItems": {
            people: {"Keys": [{"id": {"S": "p001"}}, {"id": {"S": "p002"}}]},
            other: {"Keys": [{"id": {"S": "x1"}}]},
        },
    }
    rows = await collect(connector, stmt(people, body))
    assert sorted((r["_table"], r["id"]) for r in rows) == [
        (people, "p001"),
        (people, "p002"),
        (other, "x1"),
    ]
    body = {
        "verb": "TransactGetItems",
        "TransactItems": [
            {"Get": {"Key": {"id": {"S": "p005"}}}},
            {"Get": {"TableName": people, "Key": {"id": {"S": "p006"}}}},
        ],
    }
    rows = await collect(connector, stmt(people, body))
    assert [r["id"] for r in rows] == ["p005", "p006"]
    rows = await collect(connector, stmt(people, {"verb": "DescribeTable"}))
    assert rows[0]["TableName"] == people and rows[0]["ItemCount"] == 60


async def test_writes_and_admin_verbs(connector, dynamo, people, table_name):
    def w(body: dict[str, Any], table: str = people) -> Statement:
        return stmt(table, body, readonly=False)

    item = {"id": {"S": "new1"}, "n": {"N": "5"}}
    assert await connector.execute_write(w({"verb": "PutItem", "Item": item})) == 1
    got = (await dynamo.get_item(TableName=people, Key={"id": {"S": "new1"}}))["Item"]
    assert got == item
    await connector.execute_write(
        w(
            {
                "verb": "UpdateItem",
                "Key": {"id": {"S": "new1"}},
                "UpdateExpression": "SET n = n + :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        )
    )
    got = (await dynamo.get_item(TableName=people, Key={"id": {"S": "new1"}}))["Item"]
    assert got["n"] == {"N": "6"}
    await connector.execute_write(w({"verb": "DeleteItem", "Key": {"id": {"S": "new1"}}}))
    assert "Item" not in await dynamo.get_item(TableName=people, Key={"id": {"S": "new1"}})
    body = {
        "verb": "BatchWriteItem",
        "RequestItems": {
            people: [
                {"PutRequest": {"Item": {"id": {"S": "b1"}}}},
                {"DeleteRequest": {"Key": {"id": {"S": "p000"}}}},
            ]
        },
    }
    assert await connector.execute_write(w(body)) == 2
    body = {
        "verb": "TransactWriteItems",
        "TransactItems": [
            {"Put": {"Item": {"id": {"S": "t1"}}}},
            {"Delete": {"Key": {"id": {"S": "p001"}}}},
        ],
    }
    assert await connector.execute_write(w(body)) == 2
    ids = {i["id"]["S"] for i in (await dynamo.scan(TableName=people))["Items"]}
    assert {"b1", "t1"} <= ids and not {"p000", "p001"} & ids and len(ids) == 60
    # moto's PartiQL cannot bind parameters in an INSERT's VALUE: a literal here
    insert = f"INSERT INTO \"{people}\" VALUE {{'id': 'q1'}}"
    body = {"verb": "ExecuteStatement", "Statement": insert}
    assert await connector.execute_write(w(body)) == 1
    assert "Item" in await dynamo.get_item(TableName=people, Key={"id": {"S": "q1"}})
    # admin verbs
    fresh = table_name + "_new"
    create = {
        "verb": "CreateTable",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    assert await connector.execute_write(w(create, fresh)) == 1
    ttl = {
        "verb": "UpdateTimeToLive",
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "exp"},
    }
    await connector.execute_write(w(ttl, fresh))
    desc = (await dynamo.describe_time_to_live(TableName=fresh))["TimeToLiveDescription"]
    assert desc["AttributeName"] == "exp"
    await connector.execute_write(w({"verb": "DeleteTable"}, fresh))
    assert fresh not in (await dynamo.list_tables())["TableNames"]
    # a read-only statement never writes
    with pytest.raises(QueryFailed, match="read-only"):
        await collect(connector, stmt(people, {"verb": "PutItem", "Item": item}))
    assert "Item" not in await dynamo.get_item(TableName=people, Key={"id": {"S": "new1"}})


async def test_table_name_must_be_the_steps(connector, dynamo, people, table_name):
    other = table_name + "_secret"
    await make_table(dynamo, other)
    body = {"verb": "Scan", "TableName": other}
    with pytest.raises(QueryFailed, match="not the step's table"):
        await collect(connector, stmt(people, body))
    with pytest.raises(QueryFailed, match="unknown parameter 'TableNam'"):
        await collect(connector, stmt(people, {"verb": "Scan", "TableNam": other}))


async def test_bulk_arrow_types(connector, people):
    batches = [b async for b in connector.stream(stmt(people, {"verb": "Scan"}, bulk=True))]
    types = {c.name: c.type for c in batches[-1].columns}
    assert types["age"] == "BIGINT" and types["price"] == "DECIMAL(38,10)"
    assert types["active"] == "BOOLEAN" and types["tags"] == "JSON" and types["address"] == "JSON"
    assert types["blob"] == "BLOB"
    rows = [r for b in batches for r in b.arrow.to_pylist()]
    assert {json.dumps(json.loads(r["tags"])) for r in rows} == {'["a", "b"]'}


async def test_links_by_key_and_by_in_filter(connector, dynamo, people):
    keys = [f"p{i:03d}" for i in range(0, 60, 2)] + ["missing"]
    linked = connector.with_link(stmt(people, {"verb": "Scan"}), LinkFilter("id", keys, "VARCHAR"))
    rows = await collect(connector, linked)
    assert sorted(r["id"] for r in rows) == sorted(keys[:-1])
    # a filtered child keeps its filter; a non-key column goes through IN filters of 100
    body = {
        "verb": "Scan",
        "FilterExpression": "active = :t",
        "ExpressionAttributeValues": {":t": {"BOOL": True}},
    }
    groups = list(range(0, 7)) + list(range(1000, 1200))  # more than one IN of 100
    linked = connector.with_link(stmt(people, body), LinkFilter("group", groups, "BIGINT"))
    rows = await collect(connector, linked)
    assert sorted(r["id"] for r in rows) == [f"p{i:03d}" for i in range(0, 60, 2)]
    linked = connector.with_link(stmt(people, body), LinkFilter("group", [3], "BIGINT"))
    rows = await collect(connector, linked)
    assert sorted(r["id"] for r in rows) == [
        f"p{i:03d}" for i in range(60) if i % 7 == 3 and i % 2 == 0
    ]
    # a BIGINT parent linking a string key is sent as strings
    await seed(dynamo, people, [{"id": {"S": "42"}, "v": {"N": "1"}}])
    linked = connector.with_link(
        stmt(people, {"verb": "Scan"}), LinkFilter("id", [42, 43], "BIGINT")
    )
    assert [r["id"] for r in await collect(connector, linked)] == ["42"]
    # a Query keeps its key condition; the link filters a non-key attribute
    query = {
        "verb": "Query",
        "KeyConditionExpression": "id = :i",
        "ExpressionAttributeValues": {":i": {"S": "p008"}},
    }
    linked = connector.with_link(stmt(people, query), LinkFilter("group", [1, 2], "BIGINT"))
    assert [r["id"] for r in await collect(connector, linked)] == ["p008"]
    linked = connector.with_link(stmt(people, query), LinkFilter("group", [3], "BIGINT"))
    assert await collect(connector, linked) == []
    linked = connector.with_link(stmt(people, query), LinkFilter("id", ["p008"], "VARCHAR"))
    with pytest.raises(QueryFailed, match="partition key"):
        await collect(connector, linked)
    # a linked batch that matches nothing still names columns (the projection, else the key)
    body = {
        "verb": "Scan",
        "ProjectionExpression": "#n, age, address.city",
        "ExpressionAttributeNames": {"#n": "name"},
    }
    linked = connector.with_link(stmt(people, body), LinkFilter("id", ["none"], "VARCHAR"))
    batches = [b async for b in connector.stream(linked)]
    assert [[c.name for c in b.columns] for b in batches] == [["name", "age", "address"]]
    assert len(batches[0]) == 0
    linked = connector.with_link(stmt(people, {"verb": "Scan"}), LinkFilter("id", [], "VARCHAR"))
    assert [[c.name for c in b.columns] async for b in connector.stream(linked)] == [["id"]]
    with pytest.raises(QueryFailed, match="Scan or a Query"):
        connector.with_link(
            stmt(people, {"verb": "GetItem", "Key": {"id": {"S": "a"}}}),
            LinkFilter("id", ["a"], "VARCHAR"),
        )


async def test_a_consumer_that_stops_early_and_a_deadline(connector, people):
    body = {"verb": "Scan"}
    async with contextlib.aclosing(connector.stream(stmt(people, body, batch_size=7))) as it:
        async for batch in it:
            assert len(batch) == 7
            break  # the generator closes here; the client stays usable
    assert len(await collect(connector, stmt(people, body))) == 60
    keys = [f"p{i:03d}" for i in range(60)]
    linked = connector.with_link(stmt(people, body), LinkFilter("id", keys, "VARCHAR"))
    async with contextlib.aclosing(connector.stream(linked)) as it:
        async for _ in it:
            break  # BatchGetItem calls still in flight are cancelled
    with pytest.raises(QueryTimedOut):
        await collect(connector, stmt(people, body, timeout=1e-6))


async def test_discover(connector, people):
    tables = {t.name: t for t in await connector.discover()}
    info = tables[people]
    assert info.row_count_estimate == 60
    fields = {f.name: f for f in info.fields}
    assert info.fields[0].name == "id" and fields["id"].is_primary
    assert fields["age"].data_type == "BIGINT" and fields["price"].data_type == "DECIMAL(38,10)"


async def test_unreachable_endpoint_fails_fast():
    conn = DynamoDBConnector(settings("http://127.0.0.1:9", connect_timeout_seconds=1))
    with pytest.raises(ConnectorUnavailable):
        await conn.open()
