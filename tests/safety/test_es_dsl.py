"""es_dsl analysis and GUARDRAILS rewrite (no server): targets and operations of each shape,
what is refused where, and the caps put on the body. The same bodies run against the real
server in tests/e2e_es."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.es import link_query
from safety.languages.es_dsl import EsDslLanguage, analyse_es, rewrite_es
from safety.types import TableRef

LANG = EsDslLanguage()


def access(body: Any, table: str = "orders") -> list[tuple[str, str]]:
    a = analyse_es(json.dumps(body))
    assert a.error is None, a.error
    return [(ref.name, op) for ref, op in LANG.access(a, table)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"query": {"match_all": {}}}, [("orders", "SELECT")]),
        ({"method": "GET", "path": "/orders/_doc/7"}, [("orders", "SELECT")]),
        ({"method": "POST", "path": "/orders/_count", "body": {}}, [("orders", "SELECT")]),
        ({"method": "PUT", "path": "/orders/_doc/7", "body": {"a": 1}}, [("orders", "INSERT")]),
        (
            {"method": "POST", "path": "/orders/_update/7", "body": {"doc": {}}},
            [("orders", "UPDATE")],
        ),
        ({"method": "DELETE", "path": "/orders/_doc/7"}, [("orders", "DELETE")]),
        ({"method": "DELETE", "path": "/orders"}, [("orders", "DDL")]),
        ({"method": "PUT", "path": "/orders/_settings", "body": {}}, [("orders", "DDL")]),
        (
            {
                "method": "POST",
                "path": "/orders/_bulk",
                "body": [
                    {"index": {}},
                    {"a": 1},
                    {"delete": {"_index": "items", "_id": "1"}},
                    {"update": {"_id": "2"}},
                    {"doc": {"a": 2}},
                ],
            },
            [("orders", "INSERT"), ("items", "DELETE"), ("orders", "UPDATE")],
        ),
        (
            {
                "method": "POST",
                "path": "/_mget",
                "body": {
                    "docs": [{"_index": "orders", "_id": "1"}, {"_index": "items", "_id": "2"}]
                },
            },
            [("orders", "SELECT"), ("items", "SELECT")],
        ),
        (
            {
                "method": "POST",
                "path": "/_reindex",
                "body": {"source": {"index": ["a", "b"]}, "dest": {"index": "c"}},
            },
            [("a", "SELECT"), ("b", "SELECT"), ("c", "DDL")],
        ),
        (
            {
                "query": {
                    "bool": {
                        "filter": [
                            {"terms": {"sku": {"index": "lookup", "id": "1", "path": "skus"}}}
                        ]
                    }
                }
            },
            [("orders", "SELECT"), ("lookup", "SELECT")],
        ),
        (
            {
                "method": "POST",
                "path": "/orders/_msearch",
                "body": [{}, {"query": {"match_all": {}}}, {"index": "items"}, {"size": 1}],
            },
            [("orders", "SELECT"), ("items", "SELECT")],
        ),
        (
            {"query": {"more_like_this": {"like": [{"_index": "other", "_id": "1"}, "text"]}}},
            [("orders", "SELECT"), ("other", "SELECT")],
        ),
    ],
)
def test_targets_and_operations(body: Any, expected: list[tuple[str, str]]) -> None:
    assert access(body) == expected


def test_by_query_without_a_real_query_is_unbounded() -> None:
    for query in (None, {"match_all": {}}, {"bool": {}}, {"bool": {"filter": [{"match_all": {}}]}}):
        body: dict[str, Any] = {} if query is None else {"query": query}
        a = analyse_es(json.dumps({"method": "POST", "path": "/o/_delete_by_query", "body": body}))
        assert a.unbounded, query
        assert LANG.unbounded_targets(a, LANG.access(a, "o"), TableRef("o")) == [
            (TableRef("o"), "DELETE")
        ]
    bounded = analyse_es(
        json.dumps(
            {"method": "POST", "path": "/o/_delete_by_query", "body": {"query": {"term": {"a": 1}}}}
        )
    )
    assert not bounded.unbounded


@pytest.mark.parametrize(
    "body",
    [
        {"query": {"bool": {"must": [{"script": {"script": "1"}}]}}},
        {"aggs": {"a": {"terms": {"field": "x"}, "aggs": {"b": {"scripted_metric": {}}}}}},
        {"runtime_mappings": {}},
        {"script_fields": {}},
        {
            "method": "POST",
            "path": "/_reindex",
            "body": {
                "source": {"index": "a", "remote": {"host": "http://h:9200"}},
                "dest": {"index": "b"},
            },
        },
        {"method": "POST", "path": "/o/_doc?pipeline=x", "body": {}},
    ],
)
def test_code_is_an_injection_block_at_any_depth(body: Any) -> None:
    a = analyse_es(json.dumps(body))
    assert a.error is None and a.injection_blocks, a


@pytest.mark.parametrize(
    "body",
    [
        {"method": "GET", "path": "/_cat/indices"},
        {"method": "PUT", "path": "/_template/t", "body": {}},
        {"method": "POST", "path": "/o/_search/template", "body": {}},
        {"method": "POST", "path": "/o/_search/scroll", "body": {}},
        {"method": "PUT", "path": "/_scripts/s", "body": {}},
        {"method": "POST", "path": "/O/_search", "body": {}},
        {"method": "POST", "path": "/a:b/_search", "body": {}},
        {"method": "POST", "path": "/o/./_search", "body": {}},
        {"method": "GET", "path": "/o/_update/1"},
        {"query": {}, "profile": True},
    ],
)
def test_refused_shapes(body: Any) -> None:
    a = analyse_es(json.dumps(body))
    assert a.error is not None or a.structural, a


def test_rewrite_caps_size_buckets_and_timeout() -> None:
    body = {
        "query": {"match_all": {}},
        "size": 5000,
        "timeout": "1m",
        "aggs": {
            "t": {
                "terms": {"field": "k", "size": 100000},
                "aggs": {"h": {"top_hits": {"size": 999}}},
            },
            "c": {"composite": {"sources": []}},
        },
    }
    out = json.loads(rewrite_es(json.dumps(body), 100, 2500))
    assert out["size"] == 101 and out["timeout"] == "2500ms"
    assert out["aggs"]["t"]["terms"]["size"] == 101
    assert out["aggs"]["t"]["aggs"]["h"]["top_hits"]["size"] == 101
    assert out["aggs"]["c"]["composite"]["size"] == 101
    # a smaller size and a shorter timeout are kept; no size means "up to the cap"
    small = json.loads(rewrite_es(json.dumps({"size": 3, "timeout": "200ms"}), 100, 2500))
    assert small == {"size": 3, "timeout": "200ms"}
    assert json.loads(rewrite_es("{}", 100, 2500))["size"] == 101
    # an envelope keeps its path
    env = {"method": "POST", "path": "/o/_search?routing=r", "body": {"size": 500}}
    out = json.loads(rewrite_es(json.dumps(env), 10, 1000))
    assert out["path"] == "/o/_search?routing=r" and out["body"]["size"] == 11


def test_link_is_anded_into_the_original_query() -> None:
    q = {"bool": {"must": [{"match": {"t": "x"}}], "filter": {"term": {"s": 1}}}}
    assert link_query(q, "k", [1, 2]) == {
        "bool": {
            "must": [{"match": {"t": "x"}}],
            "filter": [{"term": {"s": 1}}, {"terms": {"k": [1, 2]}}],
        }
    }
    assert link_query({"match": {"t": "x"}}, "k", [1]) == {
        "bool": {"filter": [{"terms": {"k": [1]}}], "must": [{"match": {"t": "x"}}]}
    }
    big = link_query(None, "k", list(range(70_000)))
    should = big["bool"]["filter"][0]["bool"]["should"]
    assert [len(c["terms"]["k"]) for c in should] == [65_536, 70_000 - 65_536]


def test_msearch_guards_every_search() -> None:
    env = {
        "method": "POST",
        "path": "/o/_msearch",
        "body": [{}, {"size": 500}, {"index": "o"}, {"query": {"term": {"a": 1}}}],
    }
    out = json.loads(rewrite_es(json.dumps(env), 10, 1000))
    assert out["body"][0] == {} and out["body"][2] == {"index": "o"}
    assert [b["size"] for b in out["body"][1::2]] == [11, 11]
    assert all(b["timeout"] == "1000ms" for b in out["body"][1::2])
    for bad in ([{}], [{"bogus": 1}, {}], [{}, {"aggs": {}}], [{}, {"script_fields": {}}]):
        a = analyse_es(json.dumps({"method": "POST", "path": "/o/_msearch", "body": bad}))
        assert a.structural or a.injection_blocks, bad
