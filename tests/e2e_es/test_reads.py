"""es_dsl reads over HTTP, each response compared with what Elasticsearch answers the raw
client for the same request, the guardrails' row cap, and dry run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e_es.conftest import ROW_CAP, Env
from tests.es_server import ES_SETUP_TIMEOUT

pytestmark = [pytest.mark.elasticsearch, pytest.mark.postgres, ES_SETUP_TIMEOUT]


def hits_table(res: dict[str, Any], score: bool = False) -> list[dict[str, Any]]:
    rows = []
    for h in res["hits"]["hits"]:
        row = {"_id": h["_id"], **({"_score": h["_score"]} if score else {}), **h["_source"]}
        rows.append(row)
    return rows


def data(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()["data"]


SEARCHES: list[tuple[str, dict[str, Any]]] = [
    ("term-sorted", {"query": {"term": {"kind": "tool"}}, "sort": [{"n": "desc"}], "size": 8}),
    (
        "range-source",
        {
            "query": {"range": {"price": {"gte": 5, "lt": 15}}},
            "_source": ["sku", "price"],
            "sort": ["n"],
        },
    ),
    (
        "bool-must-not",
        {
            "query": {
                "bool": {
                    "must": [{"prefix": {"sku": "SKU-01"}}],
                    "must_not": [{"term": {"kind": "toy"}}],
                }
            },
            "sort": [{"sku": "asc"}],
        },
    ),
    ("ids", {"query": {"ids": {"values": ["i3", "i5", "i99"]}}, "sort": ["n"]}),
]


@pytest.mark.parametrize(("name", "body"), SEARCHES, ids=[n for n, _ in SEARCHES])
def test_search_matches_the_raw_answer(env: Env, name: str, body: dict[str, Any]) -> None:
    got = data(env.simple("items", body))
    want = hits_table(env.raw.search("items", {**body, "size": body.get("size", 100)}))
    assert want, "a case that reads nothing proves little"
    assert got["rows"] == [{c: w.get(c) for c in got["columns"]} for w in want]
    assert got["row_count"] == len(want)
    # the same body in an envelope is the same answer
    env_body = {"method": "POST", "path": "/items/_search", "body": body}
    assert data(env.simple("items", env_body))["rows"] == got["rows"]


def test_relevance_scores(env: Env) -> None:
    body = {"query": {"match": {"name": "item 7"}}}
    got = data(env.simple("items", body))
    want = env.raw.search("items", {**body, "size": ROW_CAP + 1})["hits"]["hits"]
    assert [(r["_id"], r["_score"]) for r in got["rows"]] == [
        (h["_id"], pytest.approx(h["_score"])) for h in want
    ]


def test_aggregation_rows(env: Env) -> None:
    body = {
        "aggs": {
            "kind": {"terms": {"field": "kind"}, "aggs": {"avg_price": {"avg": {"field": "price"}}}}
        }
    }
    got = data(env.simple("items", body))
    res = env.raw.search("items", {**body, "size": 0})["aggregations"]
    want = [
        {
            "kind": b["key"],
            "doc_count": b["doc_count"],
            "avg_price": pytest.approx(b["avg_price"]["value"]),
        }
        for b in res["kind"]["buckets"]
    ]
    assert got["rows"] == want and len(want) == 2


def test_count_and_get(env: Env) -> None:
    q = {"query": {"range": {"qty": {"gte": 3}}}}
    got = data(env.simple("orders", {"method": "POST", "path": "/orders/_count", "body": q}))
    assert got["rows"] == [{"count": env.raw.req("POST", "/orders/_count", q)["count"]}]
    doc = data(env.simple("orders", {"method": "GET", "path": "/orders/_doc/o5"}))
    assert doc["rows"] == [{"_id": "o5", **env.raw.req("GET", "/orders/_doc/o5")["_source"]}]


def test_row_cap_truncates_and_says_so(env: Env) -> None:
    r = env.simple("orders", {"sort": ["_id"], "size": 1000})
    body = r.json()
    assert r.status_code == 200, r.text
    assert body["data"]["row_count"] == ROW_CAP and body["data"]["truncated"] is True


def test_dry_run_shows_the_guarded_body_and_runs_nothing(env: Env) -> None:
    r = env.simple(
        "ledger", {"method": "DELETE", "path": "/ledger/_doc/1"}, principal="writer", dry_run=True
    )
    assert r.status_code == 200, r.text
    assert env.raw.req("GET", "/ledger/_doc/1")["found"] is True
    r = env.simple("items", {"query": {"match_all": {}}, "size": 500}, dry_run=True)
    assert r.status_code == 200, r.text
    text = json.dumps(r.json())
    assert f'\\"size\\": {ROW_CAP + 1}' in text or f'\\"size\\":{ROW_CAP + 1}' in text
