"""ElasticsearchConnector writes against the real server: the count returned and the state
the raw client sees afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import QueryFailed
from connectors.es import ElasticsearchConnector
from tests.elasticsearch.conftest import Raw, collect, records, stmt
from tests.es_server import ES_SETUP_TIMEOUT

pytestmark = [pytest.mark.elasticsearch, ES_SETUP_TIMEOUT]


@pytest.fixture
def ledger(raw: Raw) -> Any:
    index = raw.name("ledger")
    raw.http.delete(f"/{index}")
    raw.create(
        index,
        {"k": {"type": "long"}, "state": {"type": "keyword"}},
        [{"_id": i, "k": i, "state": "new"} for i in range(10)],
    )
    yield index
    raw.http.delete(f"/{index}")


def env(method: str, path: str, body: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "path": path}
    if body is not None:
        out["body"] = body
    return out


def count(raw: Raw, index: str, query: dict[str, Any] | None = None) -> int:
    return raw.req("POST", f"/{index}/_count", {"query": query or {"match_all": {}}})["count"]


async def test_document_writes(conn: ElasticsearchConnector, raw: Raw, ledger: str) -> None:
    w = conn.execute_write
    assert (
        await w(
            stmt(
                env("PUT", f"/{ledger}/_doc/x1", {"k": 100, "state": "new"}), ledger, readonly=False
            )
        )
        == 1
    )
    assert await w(stmt(env("POST", f"/{ledger}/_doc", {"k": 101}), ledger, readonly=False)) == 1
    assert (
        await w(
            stmt(
                env("POST", f"/{ledger}/_update/x1", {"doc": {"state": "done"}}),
                ledger,
                readonly=False,
            )
        )
        == 1
    )
    # visible at once: the writes wait for the refresh
    assert raw.req("GET", f"/{ledger}/_doc/x1")["_source"] == {"k": 100, "state": "done"}
    assert count(raw, ledger) == 12
    assert await w(stmt(env("DELETE", f"/{ledger}/_doc/x1"), ledger, readonly=False)) == 1
    assert await w(stmt(env("DELETE", f"/{ledger}/_doc/x1"), ledger, readonly=False)) == 0
    assert count(raw, ledger) == 11


async def test_bulk_counts_items_and_reports_a_failure(
    conn: ElasticsearchConnector, raw: Raw, ledger: str
) -> None:
    lines = [
        {"index": {"_id": "b1"}},
        {"k": 201},
        {"index": {"_id": "b2"}},
        {"k": 202},
        {"delete": {"_id": "0"}},
    ]
    n = await conn.execute_write(
        stmt(env("POST", f"/{ledger}/_bulk", lines), ledger, readonly=False)
    )
    assert n == 3 and count(raw, ledger) == 11
    bad = [{"index": {"_id": "b3"}}, {"k": 203}, {"index": {"_id": "b4"}}, {"k": "not a number"}]
    with pytest.raises(QueryFailed, match="1 item\\(s\\) applied.*mapper_parsing_exception"):
        await conn.execute_write(stmt(env("POST", f"/{ledger}/_bulk", bad), ledger, readonly=False))
    assert count(raw, ledger) == 12  # no transactions: the item before the failure stays


async def test_by_query_writes(conn: ElasticsearchConnector, raw: Raw, ledger: str) -> None:
    body = env("POST", f"/{ledger}/_update_by_query", {"query": {"range": {"k": {"lt": 4}}}})
    assert await conn.execute_write(stmt(body, ledger, readonly=False)) == 4
    dq = env("POST", f"/{ledger}/_delete_by_query", {"query": {"term": {"k": 9}}})
    assert await conn.execute_write(stmt(dq, ledger, readonly=False)) == 1
    assert count(raw, ledger) == 9


async def test_write_through_stream_needs_readonly_false(
    conn: ElasticsearchConnector, raw: Raw, ledger: str
) -> None:
    body = env("PUT", f"/{ledger}/_doc/s1", {"k": 1})
    with pytest.raises(QueryFailed, match="read-only"):
        await collect(conn, stmt(body, ledger))
    assert count(raw, ledger, {"ids": {"values": ["s1"]}}) == 0
    assert records(await collect(conn, stmt(body, ledger, readonly=False))) == [
        {"rows_affected": 1}
    ]


async def test_index_lifecycle(conn: ElasticsearchConnector, raw: Raw) -> None:
    index = raw.name("made")
    w = conn.execute_write
    assert (
        await w(
            stmt(
                env("PUT", f"/{index}", {"mappings": {"properties": {"a": {"type": "keyword"}}}}),
                index,
                readonly=False,
            )
        )
        == 1
    )
    assert raw.req("GET", f"/{index}/_mapping")[index]["mappings"]["properties"] == {
        "a": {"type": "keyword"}
    }
    assert await w(stmt(env("DELETE", f"/{index}"), index, readonly=False)) == 1
    assert raw.http.get(f"/{index}").status_code == 404
