"""The reference endpoints over real HTTP (hypercorn subprocess), whole responses compared."""

from __future__ import annotations

import base64
from typing import Any

import httpx

import sluice
from tests.api.conftest import Server
from tests.helpers import REQUEST_ID, assert_blocked, assert_error_envelope

ALL_STAGES = ["PROMPT_GUARD", "RBAC_GATE", "AST_CHECKER", "INJECTION_ANALYSER", "GUARDRAILS"]


def post(server: Server, body: Any, path: str = "/v1/query/simple") -> httpx.Response:
    with server.client() as c:
        return c.post(path, json=body)


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    """Replace the two values that legitimately vary per call with fixed markers."""
    assert REQUEST_ID.match(body["request_id"])
    assert body["metadata"]["execution_time_ms"] > 0
    return {
        **body,
        "request_id": "<id>",
        "metadata": {**body["metadata"], "execution_time_ms": "<ms>"},
    }


def test_health(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v1/health")
    assert r.status_code == 200
    assert REQUEST_ID.match(r.headers["x-request-id"])
    # four real databases are reachable; the fifth points at a closed port
    assert r.json() == {"status": "ok", "version": sluice.__version__, "databases_connected": 4}


def test_databases_pagination_and_unreachable(server: Server) -> None:
    with server.client() as c:
        first = c.get("/v1/databases", params={"page": 1, "size": 4}).json()
        second = c.get("/v1/databases", params={"page": 2, "size": 4}).json()
        default = c.get("/v1/databases").json()
    assert first["pagination"] == {
        "page": 1,
        "size": 4,
        "total_databases": 5,
        "total_pages": 2,
        "has_more": True,
    }
    assert second["pagination"] == {
        "page": 2,
        "size": 4,
        "total_databases": 5,
        "total_pages": 2,
        "has_more": False,
    }
    assert default["pagination"] == first["pagination"]
    assert [d["name"] for d in first["databases"]] == ["pg", "maria", "lite", "duck"]
    (gone,) = second["databases"]
    assert gone["name"] == "gone" and gone["reachable"] is False and gone["tables"] == []
    assert gone["type"] == "postgresql" and gone["database"] == "x"
    assert isinstance(gone["error"], str) and gone["error"]
    for entry in first["databases"]:
        assert set(entry) == {"name", "type", "database", "reachable", "tables", "error"}
        assert entry["reachable"] is True and entry["error"] is None
    lite = first["databases"][2]
    assert lite["type"] == "sqlite"
    (people,) = lite["tables"]
    assert set(people) == {
        "name",
        "fields",
        "row_count_estimate",
        "description",
        "row_count_source",
    }
    assert people["row_count_source"] == {"source": "count(*)", "exact": True}
    assert [f["name"] for f in people["fields"]] == ["id", "name", "age", "city"]


def test_databases_rejects_bad_page_size(server: Server) -> None:
    with server.client() as c:
        for params in ({"size": 101}, {"size": 0}, {"page": "x"}):
            body = assert_error_envelope(
                c.get("/v1/databases", params=params), 400, "invalid_parameter"
            )
            assert "must be an integer" in body["error"]["message"]


def test_table_detail_with_distribution(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v1/databases/pg/tables/items")
    assert r.status_code == 200
    table = r.json()
    assert set(table) == {
        "name",
        "fields",
        "row_count_estimate",
        "description",
        "row_count_source",
    }
    assert table["row_count_source"] == {"source": "pg_class.reltuples", "exact": False}
    assert table["name"] == "items" and table["row_count_estimate"] == 500
    fields = {f["name"]: f for f in table["fields"]}
    assert list(fields) == [
        "id",
        "kind_id",
        "name",
        "price",
        "created",
        "day",
        "payload",
        "blob",
        "uid",
        "active",
    ]
    fid = fields["id"]
    assert {k: fid[k] for k in ("data_type", "nullable", "is_primary", "is_foreign_key")} == {
        "data_type": "BIGINT",
        "nullable": False,
        "is_primary": True,
        "is_foreign_key": False,
    }
    assert fields["kind_id"]["is_foreign_key"] is True
    dist = fid["distribution"]
    assert set(dist) == {
        "distinct_count",
        "null_fraction",
        "sample_values",
        "min_value",
        "max_value",
        "sources",
    }
    # every figure says where it comes from: here pg_stats, estimates all
    assert dist["sources"]["distinct_count"] == {"source": "pg_stats.n_distinct", "exact": False}
    assert {s["exact"] for s in dist["sources"].values()} == {False}
    assert dist["distinct_count"] == 500 and dist["null_fraction"] == 0.0
    assert dist["min_value"] == 1 and dist["max_value"] == 500


def test_table_detail_404s(server: Server) -> None:
    with server.client() as c:
        body = assert_error_envelope(
            c.get("/v1/databases/nope/tables/items"), 404, "unknown_database"
        )
        assert "'nope'" in body["error"]["message"]
        body = assert_error_envelope(c.get("/v1/databases/pg/tables/itemz"), 404, "unknown_table")
        assert "did you mean 'items'" in body["error"]["suggestion"]


def test_simple_query_whole_envelope(server: Server) -> None:
    r = post(
        server,
        {
            "database": "lite",
            "table": "people",
            "language": "sql",
            "query": "SELECT id, name, city FROM people ORDER BY id",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == body["request_id"]
    assert normalized(body) == {
        "request_id": "<id>",
        "status": "ok",
        "data": {
            "columns": ["id", "name", "city"],
            "rows": [
                {"id": 1, "name": "Ada", "city": "London"},
                {"id": 2, "name": "Alan", "city": None},
                {"id": 3, "name": "Grace", "city": "Arlington"},
            ],
            "row_count": 3,
        },
        "safety": {"stages_passed": ALL_STAGES, "warnings": []},
        "metadata": {
            "database": "lite",
            "execution_time_ms": "<ms>",
            "transport": "rest/local",
            "steps": [],
            "merge_latency_ms": None,
        },
    }


def test_json_native_values_from_postgres(server: Server) -> None:
    r = post(
        server,
        {
            "database": "pg",
            "table": "items",
            "query": "SELECT id, price, created, day, payload, blob, uid, active "
            "FROM items WHERE id = 3",
        },
    )
    assert r.status_code == 200, r.text
    (row,) = r.json()["data"]["rows"]
    assert row == {
        "id": 3,
        "price": 3.75,
        "created": "2025-01-01T03:00:00Z",
        "day": "2025-01-04",
        "payload": {"n": 3, "tags": ["a", "b"]},
        "blob": base64.b64encode(bytes.fromhex("0003")).decode(),
        "uid": "00000000-0000-0000-0000-000000000003",
        "active": False,
    }
    # decimals are exact JSON numbers, not floats rounded on the way: check the raw text
    assert '"price":3.75' in r.text


def test_simple_query_mysql_and_duckdb(server: Server) -> None:
    r = post(
        server,
        {
            "database": "maria",
            "table": "orders",
            "query": "SELECT id, amount, placed FROM orders WHERE id IN (1, 2) ORDER BY id",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rows"] == [
        {"id": 1, "amount": 0.5, "placed": "2025-02-01T00:01:00"},
        {"id": 2, "amount": 1.0, "placed": "2025-02-01T00:02:00"},
    ]
    r = post(
        server,
        {
            "database": "duck",
            "table": "visits",
            "query": "SELECT count(*) AS n, sum(ms) AS total FROM visits",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "columns": ["n", "total"],
        "rows": [{"n": 100, "total": 50500}],
        "row_count": 1,
    }


def test_row_cap_truncates_with_warning(server: Server) -> None:
    r = post(server, {"database": "pg", "table": "items", "query": "SELECT id FROM items"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"]["row_count"] == 100 and body["data"]["truncated"] is True
    assert [row["id"] for row in body["data"]["rows"]][:3] == [1, 2, 3]
    assert any("truncated to 100 rows" in w for w in body["safety"]["warnings"])


def test_blocked_envelope(server: Server) -> None:
    body = assert_blocked(
        post(server, {"database": "pg", "table": "secrets", "query": "SELECT * FROM secrets"}),
        "RBAC_GATE",
    )
    assert "secrets" in body["error"]["reason"]


def test_bad_input(server: Server) -> None:
    with server.client() as c:
        r = c.post(
            "/v1/query/simple", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert "malformed JSON" in assert_error_envelope(r, 400, "invalid_body")["error"]["message"]
    body = assert_error_envelope(
        post(server, {"database": "lite", "table": "people"}), 400, "invalid_body"
    )
    assert "`query`" in body["error"]["message"]
    body = assert_error_envelope(
        post(server, {"database": "lite", "table": "people", "query": 5}), 400, "invalid_body"
    )
    assert "$.query" in body["error"]["message"]
    body = assert_error_envelope(
        post(
            server, {"database": "lite", "table": "people", "query": "SELECT 1", "langauge": "sql"}
        ),
        400,
        "invalid_body",
    )
    assert "langauge" in body["error"]["message"]
    body = assert_error_envelope(
        post(
            server,
            {"database": "lite", "table": "people", "language": "klingon", "query": "SELECT 1"},
        ),
        400,
        "invalid_request",
    )
    assert "klingon" in body["error"]["message"]
    body = assert_error_envelope(
        post(server, {"database": "lite", "table": "people", "language": "mql", "query": "{}"}),
        400,
        "invalid_request",
    )
    assert "speaks sql" in body["error"]["message"]
    # the same check, the same answer, for a step of a federated query (PROMPT_GUARD judges
    # it once for every path; it names the step)
    body = assert_error_envelope(
        post(
            server,
            {
                "steps": [
                    {"step_id": "a", "database": "pg", "table": "items", "query": "SELECT 1"},
                    {"step_id": "b", "database": "lite", "table": "people", "query": "{}",
                     "language": "mql"},
                ],
                "merge": "SELECT * FROM a",
            },
            "/v1/query",
        ),
        400,
        "invalid_request",
    )  # fmt: skip
    assert "speaks sql" in body["error"]["message"]
    assert body["error"]["details"] == {"step_id": "b"}
    body = assert_error_envelope(
        post(server, {"database": "pgg", "table": "items", "query": "SELECT 1"}),
        404,
        "unknown_database",
    )
    assert "did you mean 'pg'" in body["error"]["suggestion"]
    assert_error_envelope(
        post(server, {"database": "lite", "table": "nobody", "query": "SELECT * FROM nobody"}),
        404,
        "unknown_table",
    )


def test_a_rejected_statement_is_400_with_the_databases_message(server: Server) -> None:
    body = assert_error_envelope(
        post(
            server,
            {"database": "pg", "table": "items", "query": "SELECT no_such_column FROM items"},
        ),
        400,
        "query_rejected",
    )
    assert "no_such_column" in body["error"]["message"]
    # the pool is clean: the next request works
    r = post(
        server, {"database": "pg", "table": "items", "query": "SELECT 1 AS one FROM items LIMIT 1"}
    )
    assert r.status_code == 200 and r.json()["data"]["rows"] == [{"one": 1}]


def test_timeout_is_reported_and_the_next_query_works(server: Server) -> None:
    # pg has query_timeout_seconds: 2
    body = assert_error_envelope(
        post(
            server,
            {
                "database": "pg",
                "table": "items",
                "query": "SELECT count(*) FROM items a, items b, items c, items d",
            },
        ),
        504,
        "query_timeout",
    )
    assert "timeout" in body["error"]["message"]
    r = post(
        server, {"database": "pg", "table": "items", "query": "SELECT count(*) AS n FROM items"}
    )
    assert r.status_code == 200 and r.json()["data"]["rows"] == [{"n": 500}]


def test_unreachable_database_query_is_503(server: Server) -> None:
    body = assert_error_envelope(
        post(server, {"database": "gone", "table": "t", "query": "SELECT 1 FROM t"}),
        503,
        "database_unavailable",
    )
    assert body["error"]["message"].startswith("database 'gone' is unreachable: ")


def test_framework_errors_are_envelopes(server: Server) -> None:
    with server.client() as c:
        assert_error_envelope(c.get("/v1/nowhere"), 404, "not_found")
        assert_error_envelope(c.get("/v1/query/simple"), 405, "method_not_allowed")
        assert_error_envelope(
            c.post("/v1/query/simple", content=b"x" * 2_000_000), 413, "body_too_large"
        )


def test_openapi_matches_router(server: Server, tmp_path: Any) -> None:
    """Every served route is documented and every documented route is served."""
    from starlette.routing import Route

    from api.app import build_app
    from engine.config import load_config

    with server.client() as c:
        spec = c.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    _, app = build_app(load_config(server.config_path))
    served = {
        (m, r.path)
        for r in app.routes
        if isinstance(r, Route) and r.include_in_schema
        for m in (r.methods or ())
        if m != "HEAD"
    }
    assert documented == served
    assert {
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}/logs"),
        ("GET", "/metrics"),
        ("GET", "/v1/results/{request_id}"),
    } <= served
    op = spec["paths"]["/v1/query/simple"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SimpleQueryRequest"
    }
    assert set(spec["components"]["schemas"]["SimpleQueryRequest"]["required"]) == {
        "database",
        "table",
        "query",
    }
