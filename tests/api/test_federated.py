"""POST /v1/query and GET /v1/results over real HTTP, checked against the databases' own
answers (the server caps steps at 100 rows and inlines 50)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Server
from tests.helpers import REQUEST_ID, assert_blocked, assert_error_envelope
from tests.servers import MySQLServer

LINKED = {
    "steps": [
        {
            "step_id": "i",
            "database": "pg",
            "table": "items",
            "query": "SELECT id, name, price FROM items WHERE id <= 20",
        },
        {
            "step_id": "o",
            "database": "maria",
            "table": "orders",
            "query": "SELECT id, item_id, qty, amount FROM orders",
            "depends_on": ["i"],
            "link_from": "id",
            "link_to": "item_id",
        },
    ],
    "merge": "SELECT o.id AS order_id, i.name, o.qty, o.amount FROM i JOIN o "
    "ON o.item_id = i.id ORDER BY o.id",
}


def post(server: Server, body: Any) -> httpx.Response:
    with server.client() as c:
        return c.post("/v1/query", json=body)


def expected_orders(my: MySQLServer) -> list[dict[str, Any]]:
    rows = my.run("SELECT id, item_id, qty, amount FROM orders WHERE item_id <= 20 ORDER BY id")
    return [
        {"order_id": r[0], "name": f"item {r[1]}", "qty": r[2], "amount": float(r[3])} for r in rows
    ]


def test_linked_join_inline_then_paged(server: Server, seeded: Any) -> None:
    _, my = seeded
    expected = expected_orders(my)
    assert len(expected) == 80
    r = post(server, LINKED)
    assert r.status_code == 200, r.text
    body = r.json()
    assert REQUEST_ID.match(body["request_id"]) and body["status"] == "ok"
    data = body["data"]
    assert data["columns"] == ["order_id", "name", "qty", "amount"]
    assert data["row_count"] == 80 and data["truncated"] is True
    assert data["rows"] == expected[:50]
    meta = body["metadata"]
    assert meta["transport"] == "rest/local" and meta["database"] is None
    assert meta["merge_latency_ms"] > 0
    assert meta["result_pages"] == {
        "path": f"/v1/results/{body['request_id']}",
        "size": 100,
        "total_pages": 1,
    }
    steps = {s["step_id"]: s for s in meta["steps"]}
    assert steps["i"]["rows_returned"] == 20 and steps["i"]["database"] == "pg"
    assert steps["o"]["rows_returned"] == 80 and steps["o"]["strategy"] == "link"
    assert steps["o"]["native_queries"] >= 1 and steps["o"]["first_batch_ms"] is not None
    assert body["safety"]["stages_passed"] == [
        "PROMPT_GUARD",
        "RBAC_GATE",
        "AST_CHECKER",
        "INJECTION_ANALYSER",
        "GUARDRAILS",
    ]

    paged: list[dict[str, Any]] = []
    with server.client() as c:
        for page in (1, 2, 3):
            p = c.get(f"/v1/results/{body['request_id']}", params={"page": page, "size": 30})
            assert p.status_code == 200, p.text
            got = p.json()
            assert set(got) == {
                "request_id",
                "page",
                "size",
                "columns",
                "rows",
                "has_more",
                "total_rows",
            }
            assert got["request_id"] == body["request_id"]
            assert (got["page"], got["size"], got["total_rows"]) == (page, 30, 80)
            assert got["has_more"] is (page < 3)
            assert got["columns"] == data["columns"]
            paged.extend(got["rows"])
    assert paged == expected


def test_results_404_and_bad_size(server: Server) -> None:
    with server.client() as c:
        assert_error_envelope(c.get("/v1/results/req_000000000000"), 404, "result_not_found")
        assert_error_envelope(c.get("/v1/results/nonsense"), 404, "result_not_found")
        assert_error_envelope(
            c.get("/v1/results/req_000000000000", params={"size": 10_001}), 400, "invalid_parameter"
        )


def test_invalid_dags_name_the_step(server: Server) -> None:
    cycle = {
        "steps": [
            {
                "step_id": "a",
                "database": "lite",
                "table": "people",
                "query": "SELECT id FROM people",
                "depends_on": ["b"],
            },
            {
                "step_id": "b",
                "database": "lite",
                "table": "people",
                "query": "SELECT id FROM people",
                "depends_on": ["a"],
            },
        ],
        "merge": "SELECT * FROM a",
    }
    body = assert_error_envelope(post(server, cycle), 400, "invalid_query")
    assert "cycle" in body["error"]["message"]
    dup = {"steps": [LINKED["steps"][0], LINKED["steps"][0]], "merge": "SELECT * FROM i"}
    body = assert_error_envelope(post(server, dup), 400, "invalid_query")
    assert "duplicate step_id 'i'" in body["error"]["message"]
    unknown = {"steps": [{**LINKED["steps"][0], "database": "nowhere"}]}
    body = assert_error_envelope(post(server, unknown), 404, "unknown_database")
    assert "nowhere" in body["error"]["message"]
    body = assert_error_envelope(post(server, {"steps": []}), 400, "invalid_query")
    body = assert_error_envelope(post(server, {"steps": [{"step_id": "x"}]}), 400, "invalid_body")
    assert "database" in body["error"]["message"]


def test_merge_that_reads_a_file_is_blocked(server: Server) -> None:
    body = {**LINKED, "merge": "SELECT * FROM read_csv('/etc/passwd')"}
    err = assert_error_envelope(post(server, body), 400, "merge_blocked")
    assert "read_csv" in err["error"]["message"].lower()


def test_a_step_the_database_rejects_is_400_naming_it(server: Server) -> None:
    body = {
        "steps": [
            LINKED["steps"][0],
            {**LINKED["steps"][1], "query": "SELECT id, item_id, nope FROM orders"},
        ],
        "merge": LINKED["merge"],
    }
    err = assert_error_envelope(post(server, body), 400, "step_failed")
    assert "step 'o'" in err["error"]["message"] and "nope" in err["error"]["message"]
    assert err["error"]["details"]["cause"] == "query_rejected"


def test_partial_strips_denied_step_and_its_dependants(server: Server) -> None:
    body = {
        "steps": [
            {
                "step_id": "p",
                "database": "lite",
                "table": "people",
                "query": "SELECT id, name FROM people",
            },
            {
                "step_id": "s",
                "database": "pg",
                "table": "secrets",
                "query": "SELECT id FROM secrets",
            },
            {
                "step_id": "t",
                "database": "pg",
                "table": "items",
                "query": "SELECT id FROM items",
                "depends_on": ["s"],
                "link_from": "id",
                "link_to": "id",
            },
        ],
        "merge": "SELECT name FROM p ORDER BY id",
    }
    r = post(server, body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["data"]["rows"] == [{"name": "Ada"}, {"name": "Alan"}, {"name": "Grace"}]
    assert [s["step_id"] for s in got["metadata"]["steps"]] == ["p"]
    warnings = " ".join(got["safety"]["warnings"])
    assert "s" in got["safety"]["warnings"][0] and "t" in warnings
    assert_blocked(post(server, {"steps": [body["steps"][1]]}), "RBAC_GATE")


def test_dry_run_runs_nothing_and_shows_plan(server: Server) -> None:
    r = post(server, {**LINKED, "dry_run": True})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "dry_run"
    assert got["plan"].startswith("Plan\n  - i: pg.items")
    assert "link i.id -> o.item_id" in got["plan"]
    rewritten = {s["step_id"]: s["rewritten"] for s in got["steps"]}
    assert "LIMIT 101" in rewritten["i"] and "LIMIT 101" in rewritten["o"]
