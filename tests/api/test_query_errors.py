"""A query the database or the parser rejects is the client's mistake: a 400 naming the
problem in the database's own words (PostgreSQL's DETAIL and HINT kept), never a 500, and a
syntax error is never a 403 "blocked" nor shows sqlglot's internals. 403 stays for what the
safety policy refuses on purpose."""

from __future__ import annotations

import httpx

from tests.api.conftest import Server
from tests.helpers import assert_error_envelope


def simple(c: httpx.Client, database: str, table: str, query: str) -> httpx.Response:
    return c.post("/v1/query/simple", json={"database": database, "table": table, "query": query})


def test_unknown_column_keeps_the_database_message_and_hint(server: Server) -> None:
    with server.client() as c:
        body = assert_error_envelope(simple(c, "pg", "items", "SELECT nme FROM items"), 400)
        err = body["error"]
        assert err["code"] == "query_rejected"
        assert 'column "nme" does not exist' in err["message"]
        assert "Perhaps you meant" in err["suggestion"] and '"items.name"' in err["suggestion"]
        assert err["details"]["sqlstate"] == "42703" and "Perhaps" in err["details"]["hint"]
        # a table typo: the step's table is looked up first (404 with the likely name)...
        body = assert_error_envelope(simple(c, "pg", "itemz", "SELECT id FROM itemz"), 404)
        assert "did you mean 'items'" in body["error"]["suggestion"]
        # ...and a body acting on another table than the declared one stays refused (403),
        # in plain words naming both
        r = simple(c, "pg", "items", "SELECT id FROM itemz")
        assert r.status_code == 403 and "itemz" in r.json()["error"]["reason"]
        for db, table, query, words in (
            ("maria", "orders", "SELECT nope FROM orders", "Unknown column 'nope'"),
            ("lite", "people", "SELECT nope FROM people", "no such column: nope"),
            ("duck", "visits", "SELECT nope FROM visits", "nope"),
        ):
            body = assert_error_envelope(simple(c, db, table, query), 400)
            assert body["error"]["code"] == "query_rejected", body
            assert words in body["error"]["message"], body


def test_syntax_errors_are_400_in_plain_words(server: Server) -> None:
    with server.client() as c:
        for query in ("SELEC * FROM items", "SELECT id * FROM items", "SELECT * FROM items WHERE"):
            r = simple(c, "pg", "items", query)
            body = assert_error_envelope(r, 400)
            err = body["error"]
            assert body["status"] == "error" and err["code"] == "invalid_query", body
            assert err["message"].startswith("SQL syntax error at line 1"), err
            assert "<class" not in err["message"] and "sqlglot" not in r.text, err
        # what the policy refuses on purpose stays a 403
        r = simple(c, "pg", "secrets", "SELECT * FROM secrets")
        assert r.status_code == 403 and r.json()["status"] == "blocked"


def test_a_federated_step_the_database_rejects_is_400(server: Server) -> None:
    body = {
        "steps": [
            {"step_id": "a", "database": "pg", "table": "items", "query": "SELECT nme FROM items"}
        ]
    }
    with server.client() as c:
        got = assert_error_envelope(c.post("/v1/query", json=body), 400)
    err = got["error"]
    assert err["code"] == "step_failed" and 'column "nme" does not exist' in err["message"]
    assert err["details"]["step_id"] == "a" and err["details"]["cause"] == "query_rejected"
    assert "Perhaps you meant" in err["details"]["hint"]
