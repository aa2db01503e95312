"""The CouchDB connector against a real PouchDB Server: every read compared with the answer
the server gives a plain HTTP client, writes checked by reading back, paging past a page,
the row cap, Arrow batches, links, discovery and failures."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest

from connectors.base import Batch, LinkFilter, Statement
from connectors.config import DatabaseConfig
from connectors.couchdb import CouchDBConnector
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.registry import database_config

pytestmark = pytest.mark.couchdb

DOCS = [
    {
        "_id": f"p{i:03d}",
        "name": f"user{i}",
        "age": 20 + i % 30,
        "score": i / 4,
        "active": i % 2 == 0,
        "tags": ["a", "b"] if i % 3 == 0 else [],
        "address": {"city": "Oslo" if i % 4 == 0 else "Rome", "zip": i},
        "group": i % 7,
    }
    for i in range(130)
]
VIEW_DDOC = {
    "_id": "_design/stats",
    "views": {
        "by_group": {
            "map": "function (doc) { if (doc.group !== undefined) emit(doc.group, doc.age); }",
            "reduce": "_sum",
        }
    },
}


def config(url: str, **kw: Any) -> DatabaseConfig:
    return database_config(name="couch", type="couchdb", dsn=url, **kw)


async def seed(client: httpx.AsyncClient, db: str, docs: list[dict[str, Any]]) -> None:
    resp = await client.post(f"/{db}/_bulk_docs", json={"docs": docs})
    assert resp.status_code == 201, resp.text
    assert not [r for r in resp.json() if "error" in r]


@pytest.fixture
async def connector(couch_url: str) -> Any:
    conn = CouchDBConnector(config(couch_url))
    await conn.open()
    try:
        yield conn
    finally:
        await conn.close()


def stmt(db: str, body: dict[str, Any], **kw: Any) -> Statement:
    return Statement(json.dumps(body), options={"collection": db}, **kw)


async def collect(conn: CouchDBConnector, statement: Statement) -> tuple[list[str], list[dict]]:
    columns: list[str] = []
    rows: list[dict] = []
    async for batch in conn.stream(statement):
        columns = [c.name for c in batch.columns]
        rows.extend(as_dicts(batch))
    return columns, rows


def as_dicts(batch: Batch) -> list[dict[str, Any]]:
    names = [c.name for c in batch.columns]
    if batch.arrow is not None:
        return batch.arrow.to_pylist()
    return [dict(zip(names, r, strict=True)) for r in batch.rows or []]


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the connector returns it: nested values as JSON text."""
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in doc.items()}


def parsed(row: dict[str, Any], json_cols: tuple[str, ...] = ("tags", "address")) -> dict:
    return {
        k: json.loads(v) if k in json_cols and isinstance(v, str) else v
        for k, v in row.items()
        if v is not None or k not in json_cols
    }


async def test_find_matches_the_servers_answer_across_pages(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS)
    selector = {"age": {"$gte": 30}, "active": True}
    want = (
        await couch.post(
            f"/{couch_db}/_find", json={"selector": selector, "sort": ["_id"], "limit": 1000}
        )
    ).json()["docs"]
    assert len(want) > 20  # more than two pages of 7
    cols, got = await collect(
        connector, stmt(couch_db, {"operation": "find", "selector": selector}, batch_size=7)
    )
    assert cols[:2] == ["_id", "_rev"]
    assert sorted((parsed(r) for r in got), key=lambda d: d["_id"]) == want


async def test_find_caps_at_max_rows_and_the_body_limit(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS)
    body = {"operation": "find", "selector": {}, "sort": ["_id"]}
    _, got = await collect(connector, stmt(couch_db, body, max_rows=11, batch_size=4))
    assert [r["_id"] for r in got] == [d["_id"] for d in DOCS[:11]]
    _, got = await collect(connector, stmt(couch_db, {**body, "limit": 5, "skip": 3}))
    assert [r["_id"] for r in got] == [d["_id"] for d in DOCS[3:8]]
    # no limit at all: every document, not CouchDB's default page of 25
    _, got = await collect(connector, stmt(couch_db, body))
    assert len(got) == len(DOCS)


async def test_find_fields_and_sort(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS)
    body = {
        "selector": {"group": 3},
        "fields": ["_id", "age", "address"],
        "sort": [{"_id": "desc"}],
    }
    want = (await couch.post(f"/{couch_db}/_find", json=body)).json()["docs"]
    cols, got = await collect(connector, stmt(couch_db, {"operation": "find", **body}))
    assert cols == ["_id", "age", "address"]
    assert [parsed(r) for r in got] == want
    assert [r["_id"] for r in got] == sorted((r["_id"] for r in got), reverse=True)


async def test_get_returns_the_document(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS[:3])
    want = (await couch.get(f"/{couch_db}/p001")).json()
    _, got = await collect(connector, stmt(couch_db, {"operation": "get", "id": "p001"}))
    assert [parsed(r) for r in got] == [want]
    _, none = await collect(connector, stmt(couch_db, {"operation": "get", "id": "nope"}))
    assert none == []


async def test_all_docs_keys_ranges_and_docs(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS[:40])
    want = (
        await couch.get(f"/{couch_db}/_all_docs", params={"startkey": '"p010"', "endkey": '"p019"'})
    ).json()["rows"]
    body = {"operation": "all_docs", "startkey": "p010", "endkey": "p019"}
    cols, got = await collect(connector, stmt(couch_db, body, batch_size=3))
    assert cols == ["id", "key", "rev"]
    assert got == [{"id": r["id"], "key": r["key"], "rev": r["value"]["rev"]} for r in want]
    keys = ["p005", "p002", "missing"]
    body = {"operation": "all_docs", "keys": keys, "include_docs": True}
    want = (
        await couch.post(
            f"/{couch_db}/_all_docs", params={"include_docs": "true"}, json={"keys": keys}
        )
    ).json()["rows"]
    _, got = await collect(connector, stmt(couch_db, body))
    assert [parsed(r) for r in got] == [r["doc"] for r in want if r.get("doc")]
    assert [r["_id"] for r in got] == ["p005", "p002"]


async def test_view_map_and_reduce(connector, couch, couch_db):
    await seed(couch, couch_db, [*DOCS[:50], VIEW_DDOC])
    path = f"/{couch_db}/_design/stats/_view/by_group"
    want = (await couch.get(path, params={"reduce": "false", "key": "2"})).json()["rows"]
    body = {"operation": "view", "ddoc": "stats", "view": "by_group", "reduce": False, "key": 2}
    cols, got = await collect(connector, stmt(couch_db, body, batch_size=2))
    assert cols == ["id", "key", "value"]
    assert got == want and len(got) == 7
    want = (await couch.get(path, params={"group": "true"})).json()["rows"]
    body = {"operation": "view", "ddoc": "stats", "view": "by_group", "group": True}
    cols, got = await collect(connector, stmt(couch_db, body))
    assert cols == ["key", "value"]
    assert got == want
    assert sum(r["value"] for r in got) == sum(d["age"] for d in DOCS[:50])


async def test_explain_is_one_row(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS[:5])
    body = {"operation": "explain", "selector": {"age": {"$gt": 21}}}
    want = (await couch.post(f"/{couch_db}/_explain", json={"selector": body["selector"]})).json()
    cols, got = await collect(connector, stmt(couch_db, body))
    assert len(got) == 1
    assert set(cols) == set(want)


async def test_bulk_path_is_arrow_with_stable_types(connector, couch, couch_db):
    docs = [{"_id": f"d{i:02d}", "n": i, "x": None if i < 5 else i / 2} for i in range(12)]
    docs.append({"_id": "d99", "n": "twelve", "late": {"k": 1}})
    await seed(couch, couch_db, docs)
    body = {"operation": "find", "selector": {}, "sort": ["_id"]}
    batches = [b async for b in connector.stream(stmt(couch_db, body, bulk=True, batch_size=5))]
    assert all(b.arrow is not None for b in batches)
    types = {c.name: c.type for c in batches[-1].columns}
    assert types["n"] == "BIGINT" and types["x"] == "VARCHAR" and types["late"] == "JSON"
    rows = [r for b in batches for r in b.arrow.to_pylist()]
    assert [r["n"] for r in rows] == [*range(12), None]  # "twelve" cannot be a BIGINT


async def test_writes_insert_update_delete_bulk(connector, couch, couch_db):
    n = await connector.execute_write(
        stmt(couch_db, {"operation": "insert", "document": {"_id": "w1", "v": 1}}, readonly=False)
    )
    assert n == 1
    doc = (await couch.get(f"/{couch_db}/w1")).json()
    assert doc["v"] == 1
    await connector.execute_write(
        stmt(couch_db, {"operation": "update", "document": {**doc, "v": 2}}, readonly=False)
    )
    doc = (await couch.get(f"/{couch_db}/w1")).json()
    assert doc["v"] == 2
    await connector.execute_write(
        stmt(couch_db, {"operation": "delete", "id": "w1", "rev": doc["_rev"]}, readonly=False)
    )
    assert (await couch.get(f"/{couch_db}/w1")).status_code == 404
    body = {"operation": "bulk_docs", "docs": [{"_id": "b1"}, {"_id": "b2", "v": 2}]}
    assert await connector.execute_write(stmt(couch_db, body, readonly=False)) == 2
    assert (await couch.get(f"/{couch_db}")).json()["doc_count"] == 2
    # a conflict (stale rev) is the server's answer, named
    with pytest.raises(QueryFailed, match="409|conflict"):
        await connector.execute_write(
            stmt(
                couch_db,
                {"operation": "update", "document": {"_id": "b1", "_rev": "1-abc"}},
                readonly=False,
            )
        )
    # a read-only statement never writes
    with pytest.raises(QueryFailed, match="read-only"):
        await collect(connector, stmt(couch_db, {"operation": "insert", "document": {}}))
    assert (await couch.get(f"/{couch_db}")).json()["doc_count"] == 2


async def test_link_keeps_the_selector(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS)
    base = stmt(couch_db, {"operation": "find", "selector": {"active": True}})
    linked = connector.with_link(base, LinkFilter("group", [1, 2, 5], "BIGINT"))
    assert json.loads(linked.text)["selector"] == {
        "$and": [{"active": True}, {"group": {"$in": [1, 2, 5]}}]
    }
    _, got = await collect(connector, linked)
    want = {d["_id"] for d in DOCS if d["active"] and d["group"] in (1, 2, 5)}
    assert {r["_id"] for r in got} == want
    # a linked batch that matches nothing still names the link column (the merge's key)
    none = connector.with_link(base, LinkFilter("group", [999], "BIGINT"))
    assert [[c.name for c in b.columns] async for b in connector.stream(none)] == [["group"]]
    with pytest.raises(QueryFailed, match="must be a `find`"):
        connector.with_link(
            stmt(couch_db, {"operation": "get", "id": "x"}), LinkFilter("a", [1], "BIGINT")
        )


async def test_link_on_id_is_a_keyed_lookup_with_finds_answer(connector, couch, couch_db):
    await seed(couch, couch_db, [*DOCS, VIEW_DDOC])
    ids = ["p003", "p077", "nope", "_design/stats", "p003"]
    body = {"operation": "find", "selector": {}, "fields": ["_id", "age"]}
    linked = connector.with_link(stmt(couch_db, body), LinkFilter("_id", ids, "VARCHAR"))
    assert "couchdb_link_keys" in linked.options
    _, got = await collect(connector, linked)
    want = (
        await couch.post(
            f"/{couch_db}/_find",
            json={"selector": {"_id": {"$in": ids}}, "fields": ["_id", "age"]},
        )
    ).json()["docs"]
    assert sorted(got, key=str) == sorted(want, key=str)
    assert sorted(r["_id"] for r in got) == ["p003", "p077"]
    # with a condition of its own, the link goes through _find (the selector is kept)
    body = {"operation": "find", "selector": {"age": {"$gt": 40}}}
    linked = connector.with_link(stmt(couch_db, body), LinkFilter("_id", ids, "VARCHAR"))
    assert "couchdb_link_keys" not in linked.options
    _, got = await collect(connector, linked)
    assert [r["_id"] for r in got] == [d["_id"] for d in DOCS if d["_id"] in ids and d["age"] > 40]


async def test_discover_types_from_sampled_documents(connector, couch, couch_db):
    await seed(couch, couch_db, [*DOCS[:20], VIEW_DDOC])
    tables = {t.name: t for t in await connector.discover()}
    info = tables[couch_db]
    assert info.row_count_estimate == 21
    fields = {f.name: f.data_type for f in info.fields}
    assert fields["_id"] == "VARCHAR" and fields["age"] == "BIGINT"
    assert fields["score"] == "DOUBLE" and fields["address"] == "JSON"
    assert "views" not in fields  # design documents are not data


async def test_a_consumer_that_stops_early_and_a_deadline(connector, couch, couch_db):
    await seed(couch, couch_db, DOCS)
    body = {"operation": "find", "selector": {}}
    async with contextlib.aclosing(connector.stream(stmt(couch_db, body, batch_size=5))) as it:
        async for batch in it:
            assert len(batch) == 5
            break  # the generator closes here; the pooled client stays usable
    _, got = await collect(connector, stmt(couch_db, body))
    assert len(got) == len(DOCS)
    with pytest.raises(QueryTimedOut):
        await collect(connector, stmt(couch_db, body, timeout=1e-6))


async def test_missing_database_and_unreachable_server(connector, couch_url):
    with pytest.raises(QueryFailed, match="404"):
        await collect(connector, stmt("no_such_db", {"operation": "find", "selector": {}}))
    conn = CouchDBConnector(config("http://127.0.0.1:9", connect_timeout_seconds=1))
    with pytest.raises(ConnectorUnavailable):
        await conn.open()
