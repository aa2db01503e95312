"""es_dsl writes over HTTP per grant: a reader cannot write, a writer can write documents
but not change structure or write every document, an admin can; each write's
`rows_affected` and the cluster state the raw client sees afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e_es.conftest import Env
from tests.es_server import ES_SETUP_TIMEOUT
from tests.helpers import assert_blocked

pytestmark = [pytest.mark.elasticsearch, pytest.mark.postgres, ES_SETUP_TIMEOUT]


@pytest.fixture
def ledger(env: Env) -> Env:
    env.raw.req("POST", "/ledger/_delete_by_query", {"query": {"match_all": {}}}, refresh="true")
    env.raw.bulk("ledger", [{"_id": i, "k": i, "state": "new"} for i in range(10)])
    return env


def write(env: Env, principal: str, method: str, path: str, body: Any = None) -> Any:
    q: dict[str, Any] = {"method": method, "path": path}
    if body is not None:
        q["body"] = body
    return env.simple("ledger", q, principal=principal)


def affected(r: Any) -> int:
    assert r.status_code == 200, r.text
    return r.json()["data"]["rows_affected"]


def count(env: Env, query: dict[str, Any] | None = None) -> int:
    return env.raw.req("POST", "/ledger/_count", {"query": query or {"match_all": {}}})["count"]


def test_reader_cannot_write(ledger: Env) -> None:
    for method, path, body in [
        ("PUT", "/ledger/_doc/x", {"k": 1}),
        ("POST", "/ledger/_update/1", {"doc": {"k": 0}}),
        ("DELETE", "/ledger/_doc/1", None),
        ("POST", "/ledger/_bulk", [{"delete": {"_id": "1"}}]),
        ("POST", "/ledger/_delete_by_query", {"query": {"term": {"k": 1}}}),
    ]:
        assert_blocked(write(ledger, "reader", method, path, body), "RBAC_GATE")
    assert count(ledger) == 10


def test_writer_writes_documents(ledger: Env) -> None:
    assert affected(write(ledger, "writer", "PUT", "/ledger/_doc/x1", {"k": 100})) == 1
    assert (
        affected(write(ledger, "writer", "POST", "/ledger/_update/x1", {"doc": {"state": "done"}}))
        == 1
    )
    assert ledger.raw.req("GET", "/ledger/_doc/x1")["_source"] == {"k": 100, "state": "done"}
    assert (
        affected(
            write(
                ledger,
                "writer",
                "POST",
                "/ledger/_bulk",
                [{"index": {"_id": "b1"}}, {"k": 201}, {"delete": {"_id": "0"}}],
            )
        )
        == 2
    )
    assert (
        affected(
            write(
                ledger,
                "writer",
                "POST",
                "/ledger/_update_by_query",
                {"query": {"range": {"k": {"lt": 3}}}},
            )
        )
        == 2
    )
    assert (
        affected(
            write(
                ledger,
                "writer",
                "POST",
                "/ledger/_delete_by_query",
                {"query": {"range": {"k": {"gte": 200}}}},
            )
        )
        == 1
    )
    assert affected(write(ledger, "writer", "DELETE", "/ledger/_doc/x1")) == 1
    assert count(ledger) == 9


def test_unbounded_and_structural_writes_need_admin(ledger: Env) -> None:
    everything = {"query": {"match_all": {}}}
    assert_blocked(
        write(ledger, "writer", "POST", "/ledger/_delete_by_query", everything), "RBAC_GATE"
    )
    assert_blocked(
        write(
            ledger, "writer", "PUT", "/ledger/_mapping", {"properties": {"z": {"type": "keyword"}}}
        ),
        "RBAC_GATE",
    )
    assert count(ledger) == 10
    assert (
        affected(
            write(
                ledger,
                "admin",
                "PUT",
                "/ledger/_mapping",
                {"properties": {"z": {"type": "keyword"}}},
            )
        )
        == 1
    )
    assert "z" in ledger.raw.req("GET", "/ledger/_mapping")["ledger"]["mappings"]["properties"]
    assert affected(write(ledger, "admin", "POST", "/ledger/_delete_by_query", everything)) == 10
    assert count(ledger) == 0


def test_dry_run_writes_nothing(ledger: Env) -> None:
    q = {
        "method": "POST",
        "path": "/ledger/_delete_by_query",
        "body": {"query": {"term": {"k": 1}}},
    }
    r = ledger.simple("ledger", q, principal="writer", dry_run=True)
    assert r.status_code == 200 and r.json()["status"] == "dry_run", r.text
    assert count(ledger) == 10
