"""ElasticsearchConnector reads against the real server, each compared with what the raw
client gets from Elasticsearch for the same request."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import anyio
import pytest

from connectors.base import LinkFilter
from connectors.errors import QueryFailed
from connectors.es import ElasticsearchConnector
from tests.elasticsearch.conftest import Raw, collect, records, stmt
from tests.es_server import ES_SETUP_TIMEOUT

pytestmark = [pytest.mark.elasticsearch, ES_SETUP_TIMEOUT]

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ORDER_PROPS = {
    "sku": {"type": "keyword"},
    "n": {"type": "long"},
    "price": {"type": "double"},
    "status": {"type": "keyword"},
    "title": {"type": "text"},
    "at": {"type": "date"},
    "address": {"properties": {"city": {"type": "keyword"}, "zip": {"type": "integer"}}},
    "tags": {"type": "keyword"},
}
BIG = 12_345


def order(i: int) -> dict[str, Any]:
    return {
        "_id": f"o{i}",
        "sku": f"s{i % 7}",
        "n": i,
        # whole numbers first: the mapping, not the first value, makes the column DOUBLE
        "price": i * 2 if i < 5 else i * 1.25,
        "status": ("open", "closed", "held")[i % 3],
        "title": f"order number {i} {'red' if i % 2 else 'blue'} widget",
        "at": (BASE + dt.timedelta(days=i % 40, hours=i % 24)).isoformat(),
        "address": {"city": f"c{i % 4}", "zip": 1000 + i},
        "tags": ["t", str(i % 5)],
    }


@pytest.fixture(scope="module")
def orders(raw: Raw) -> str:
    index = raw.name("orders")
    raw.create(index, ORDER_PROPS, [order(i) for i in range(60)])
    return index


@pytest.fixture(scope="module")
def big(raw: Raw) -> str:
    index = raw.name("big")
    raw.create(
        index,
        {"k": {"type": "long"}, "g": {"type": "keyword"}},
        [{"_id": i, "k": i, "g": f"g{i % 10}"} for i in range(BIG)],
    )
    return index


def source_rows(res: dict[str, Any], score: bool = False) -> list[dict[str, Any]]:
    """The raw answer's hits as the rows the connector should produce."""
    out = []
    for h in res["hits"]["hits"]:
        row = {"_id": h["_id"], **({"_score": h["_score"]} if score else {}), **h["_source"]}
        out.append(row)
    return out


def normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Connector rows with JSON columns parsed back (they travel as JSON text)."""
    import json

    out = []
    for r in rows:
        out.append(
            {
                k: json.loads(v)
                if isinstance(v, str) and v[:1] in "[{" and k in ("address", "tags")
                else v
                for k, v in r.items()
                if v is not None
            }
        )
    return out


@pytest.mark.parametrize("bulk", [False, True])
async def test_bare_body_hits_match_the_raw_answer(
    conn: ElasticsearchConnector, raw: Raw, orders: str, bulk: bool
) -> None:
    body = {"query": {"term": {"status": "open"}}, "sort": [{"n": "asc"}], "size": 15}
    got = records(await collect(conn, stmt(body, orders, bulk=bulk)))
    want = source_rows(raw.search(orders, body))
    assert len(want) == 15
    got_n = normalise(got)
    for g, w in zip(got_n, want, strict=True):
        assert g == {**w, "price": float(w["price"])}
    # the mapping types the column: a whole-number price is a float, never a BIGINT column
    assert all(isinstance(r["price"], float) for r in got)


async def test_relevance_search_carries_the_score(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    body = {"query": {"match": {"title": "red widget"}}, "size": 5}
    got = records(await collect(conn, stmt(body, orders)))
    want = raw.search(orders, body)["hits"]["hits"]
    assert [(r["_id"], r["_score"]) for r in got] == [(h["_id"], h["_score"]) for h in want]


async def test_envelope_search_with_source_filter(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    body = {
        "query": {"range": {"n": {"gte": 10, "lt": 20}}},
        "_source": ["sku", "n"],
        "sort": ["n"],
    }
    env = {"method": "POST", "path": f"/{orders}/_search", "body": body}
    got = records(await collect(conn, stmt(env, orders)))
    assert got == source_rows(raw.search(orders, body))
    assert list(got[0]) == ["_id", "sku", "n"]


async def test_row_cap_fetches_exactly_max_rows(conn: ElasticsearchConnector, orders: str) -> None:
    got = records(await collect(conn, stmt({"sort": ["n"]}, orders, max_rows=11)))
    assert [r["n"] for r in got] == list(range(11))


async def test_past_ten_thousand_every_document_once(
    conn: ElasticsearchConnector, raw: Raw, big: str
) -> None:
    body = {"query": {"range": {"k": {"gte": 100}}}, "size": BIG}
    batches = await collect(conn, stmt(body, big, bulk=True, batch_size=5_000))
    got = records(batches)
    want = raw.req("POST", f"/{big}/_count", {"query": body["query"]})["count"]
    assert len(got) == want == BIG - 100
    assert sorted(r["k"] for r in got) == list(range(100, BIG))
    assert len(batches) == 3  # pages of batch_size, not one response
    # every scroll was cleared, whether or not it was exhausted
    stats = raw.req("GET", "/_nodes/stats/indices/search")
    assert sum(n["indices"]["search"]["open_contexts"] for n in stats["nodes"].values()) == 0


async def test_sorted_read_past_the_window_keeps_the_order(
    conn: ElasticsearchConnector, big: str
) -> None:
    body = {"sort": [{"k": "desc"}], "size": 10_500}
    got = records(await collect(conn, stmt(body, big, max_rows=10_001)))
    assert [r["k"] for r in got] == list(range(BIG - 1, BIG - 1 - 10_001, -1))


async def test_consumer_that_stops_early_clears_the_scroll(
    conn: ElasticsearchConnector, raw: Raw, big: str
) -> None:
    stream = conn.stream(stmt({"size": BIG}, big, batch_size=1_000))
    async for _ in stream:
        break
    await stream.aclose()
    stats = raw.req("GET", "/_nodes/stats/indices/search")
    assert sum(n["indices"]["search"]["open_contexts"] for n in stats["nodes"].values()) == 0


async def test_cancelled_read_clears_the_scroll(
    conn: ElasticsearchConnector, raw: Raw, big: str
) -> None:
    got = 0
    with anyio.move_on_after(60):
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                nonlocal got
                async for b in conn.stream(stmt({"size": BIG}, big, batch_size=500)):
                    got += len(b)
                    if got >= 1_000:
                        tg.cancel_scope.cancel()

            tg.start_soon(read)
    assert got >= 1_000
    stats = raw.req("GET", "/_nodes/stats/indices/search")
    assert sum(n["indices"]["search"]["open_contexts"] for n in stats["nodes"].values()) == 0


def walk(aggs: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The expected leaf rows of the nested aggregation below, from the raw answer."""
    out = []
    for s in aggs["by_status"]["buckets"]:
        for d in s["by_day"]["buckets"]:
            out.append((s["key"], d["key"], d["doc_count"], d["avg_price"]["value"]))
    return out


async def test_nested_aggregation_one_row_per_leaf_bucket(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    body = {
        "query": {"range": {"n": {"lt": 30}}},
        "aggs": {
            "by_status": {
                "terms": {"field": "status"},
                "aggs": {
                    "by_day": {
                        "date_histogram": {"field": "at", "calendar_interval": "week"},
                        "aggs": {"avg_price": {"avg": {"field": "price"}}},
                    },
                    "total": {"sum": {"field": "price"}},
                },
            }
        },
    }
    res = raw.search(orders, {**body, "size": 0})
    got = records(await collect(conn, stmt(body, orders)))
    want = walk(res["aggregations"])
    assert len(got) == len(want) > 3
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert [(r["by_status"], r["by_day"], r["doc_count"], r["avg_price"]) for r in got] == [
        (s, epoch + dt.timedelta(milliseconds=d), c, a) for s, d, c, a in want
    ]
    totals = {s["key"]: s["total"]["value"] for s in res["aggregations"]["by_status"]["buckets"]}
    assert all(r["total"] == totals[r["by_status"]] for r in got)


async def test_composite_aggregation_pages_through_every_bucket(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    body = {
        "aggs": {
            "c": {
                "composite": {
                    "size": 4,
                    "sources": [
                        {"sku": {"terms": {"field": "sku"}}},
                        {"st": {"terms": {"field": "status"}}},
                    ],
                }
            }
        }
    }
    got = records(await collect(conn, stmt(body, orders)))
    # the raw client's own paging, bucket by bucket
    want, after = [], None
    while True:
        spec = dict(body["aggs"]["c"]["composite"], size=100)
        if after:
            spec["after"] = after
        res = raw.search(orders, {"size": 0, "aggs": {"c": {"composite": spec}}})["aggregations"]
        want += [(b["key"]["sku"], b["key"]["st"], b["doc_count"]) for b in res["c"]["buckets"]]
        after = res["c"].get("after_key")
        if not res["c"]["buckets"]:
            break
    assert [(r["c.sku"], r["c.st"], r["doc_count"]) for r in got] == want
    assert len(want) == 21


async def test_metrics_only_is_one_row(conn: ElasticsearchConnector, raw: Raw, orders: str) -> None:
    body = {"aggs": {"mx": {"max": {"field": "n"}}, "st": {"stats": {"field": "price"}}}}
    got = records(await collect(conn, stmt(body, orders)))
    res = raw.search(orders, {**body, "size": 0})["aggregations"]
    assert got == [{"mx": res["mx"]["value"], **{f"st.{k}": v for k, v in res["st"].items()}}]


async def test_count_get_mget_mapping(conn: ElasticsearchConnector, raw: Raw, orders: str) -> None:
    q = {"query": {"term": {"sku": "s3"}}}
    got = records(
        await collect(
            conn, stmt({"method": "POST", "path": f"/{orders}/_count", "body": q}, orders)
        )
    )
    assert got == [{"count": raw.req("POST", f"/{orders}/_count", q)["count"]}]
    doc = records(
        await collect(conn, stmt({"method": "GET", "path": f"/{orders}/_doc/o7"}, orders))
    )
    raw_doc = raw.req("GET", f"/{orders}/_doc/o7")
    assert normalise(doc) == [{"_id": "o7", **raw_doc["_source"]}]
    missing = await collect(conn, stmt({"method": "GET", "path": f"/{orders}/_doc/nope"}, orders))
    assert records(missing) == [] and [c.name for c in missing[0].columns] == ["_id"]
    mget = records(
        await collect(
            conn,
            stmt(
                {"method": "POST", "path": f"/{orders}/_mget", "body": {"ids": ["o1", "zz", "o2"]}},
                orders,
            ),
        )
    )
    assert [r["_id"] for r in mget] == ["o1", "o2"]
    mapping = records(
        await collect(conn, stmt({"method": "GET", "path": f"/{orders}/_mapping"}, orders))
    )
    types = {r["field"]: r["type"] for r in mapping}
    assert types["n"] == "BIGINT" and types["price"] == "DOUBLE" and types["address"] == "JSON"


async def test_path_naming_another_index_is_refused(
    conn: ElasticsearchConnector, orders: str, big: str
) -> None:
    with pytest.raises(QueryFailed, match="the step's table"):
        await collect(conn, stmt({"method": "POST", "path": f"/{big}/_search", "body": {}}, orders))
    for path in (
        f"/{orders}/../{big}/_search",
        f"/{orders},{big}/_search",
        "/_search",
        f"/{orders[:-2]}*/_search",
    ):
        with pytest.raises(QueryFailed):
            await collect(conn, stmt({"method": "POST", "path": path, "body": {}}, orders))


async def test_link_keeps_the_original_query(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    body = {"query": {"bool": {"filter": [{"term": {"status": "open"}}]}}, "sort": ["n"]}
    linked = conn.with_link(stmt(body, orders), LinkFilter("sku", ["s1", "s2", "s9"], "VARCHAR"))
    got = records(await collect(conn, linked))
    want = raw.search(
        orders,
        {
            "query": {
                "bool": {"filter": [{"term": {"status": "open"}}, {"terms": {"sku": ["s1", "s2"]}}]}
            },
            "sort": ["n"],
            "size": 100,
        },
    )
    assert [r["_id"] for r in got] == [h["_id"] for h in want["hits"]["hits"]] != []
    # a scoring query stays a scoring query: the link is a filter next to it
    m = conn.with_link(
        stmt({"query": {"match": {"title": "red"}}}, orders), LinkFilter("n", [1, 3, 4], "BIGINT")
    )
    assert sorted(r["_id"] for r in records(await collect(conn, m))) == ["o1", "o3"]


async def test_link_past_the_terms_limit_splits_the_clause(
    conn: ElasticsearchConnector, big: str
) -> None:
    values = list(range(-70_000, 0)) + [5, 10_000, 12_344]
    linked = conn.with_link(stmt({}, big), LinkFilter("k", values, "BIGINT"))
    got = records(await collect(conn, linked))
    assert sorted(r["k"] for r in got) == [5, 10_000, 12_344]


async def test_discovery(conn: ElasticsearchConnector, orders: str) -> None:
    tables = {t.name: t for t in await conn.discover()}
    t = tables[orders]
    assert t.row_count_estimate == 60
    fields = {f.name: f for f in t.fields}
    assert fields["_id"].is_primary
    assert (fields["n"].data_type, fields["sku"].data_type, fields["at"].data_type) == (
        "BIGINT",
        "VARCHAR",
        "VARCHAR",
    )
    dist = fields["n"].distribution
    assert dist is not None and (dist.min_value, dist.max_value, dist.distinct_count) == (0, 59, 60)
    assert fields["status"].distribution.distinct_count == 3
    assert not any(name.startswith(".") for name in tables)


async def test_empty_result_has_the_mapping_columns(
    conn: ElasticsearchConnector, orders: str
) -> None:
    body = {"query": {"term": {"sku": "none"}}, "_source": ["sku", "n", "nope"]}
    got = await collect(conn, stmt(body, orders))
    assert records(got) == []
    assert {(c.name, c.type) for c in got[0].columns} == {
        ("_id", "VARCHAR"),
        ("_score", "DOUBLE"),
        ("sku", "VARCHAR"),
        ("n", "BIGINT"),
    }


async def test_no_size_and_no_cap_reads_every_hit(conn: ElasticsearchConnector, big: str) -> None:
    batches = await collect(conn, stmt({"query": {"match_all": {}}}, big, bulk=True))
    assert sum(len(b) for b in batches) == BIG


async def test_msearch_rows_match_the_raw_answer(
    conn: ElasticsearchConnector, raw: Raw, orders: str
) -> None:
    lines = [
        {},
        {"query": {"term": {"sku": "s1"}}, "sort": ["n"], "_source": ["n"]},
        {"index": orders},
        {"query": {"range": {"n": {"lt": 3}}}, "sort": ["n"], "_source": ["n"]},
    ]
    got = records(
        await collect(
            conn, stmt({"method": "POST", "path": f"/{orders}/_msearch", "body": lines}, orders)
        )
    )
    body = "".join(json.dumps(line) + "\n" for line in lines)
    res = raw.http.post(
        f"/{orders}/_msearch", content=body, headers={"Content-Type": "application/x-ndjson"}
    ).json()
    want = [
        {"_search": i, "_id": h["_id"], "n": h["_source"]["n"]}
        for i, r in enumerate(res["responses"])
        for h in r["hits"]["hits"]
    ]
    assert got == want and {r["_search"] for r in got} == {0, 1}
