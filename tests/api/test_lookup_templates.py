"""Dashboard lookups that differ only in their key, end to end: on PostgreSQL the key runs as
a bound parameter (tests/safety/test_sql_template.py shows the bound text) and each lookup
still returns its own row, int4 and int8 keys alike; every client-visible text (dry run,
audit) shows the literal that was asked for."""

from __future__ import annotations

from tests.api.conftest import Server
from tests.api.test_audit import audit_lines


def lookup(key: int | str, *, dry_run: bool = False, db: str = "pg") -> dict:
    table = "items" if db == "pg" else "people"
    return {
        "database": db,
        "table": table,
        "query": f"/* panel */ SELECT id, name FROM {table} WHERE id = {key}",
        "dry_run": dry_run,
    }


def test_each_key_gets_its_row_through_one_statement(server: Server) -> None:
    with server.client() as c:
        ids = []
        for key in (7, 8, 499, 3_000_000_000, 9):
            got = c.post("/v1/query/simple", json=lookup(key))
            assert got.status_code == 200, got.text
            body = got.json()
            expected = [] if key == 3_000_000_000 else [{"id": key, "name": f"item {key}"}]
            assert body["data"]["rows"] == expected
            ids.append(body["request_id"])
        dry = c.post("/v1/query/simple", json=lookup(12, dry_run=True)).json()
    (step,) = dry["steps"]
    assert step["rewritten"] == "SELECT id, name FROM items WHERE id = 12 LIMIT 101"
    lines = audit_lines(server, set(ids))
    rewritten = [lines[i]["steps"][0]["rewritten"] for i in ids]
    assert rewritten[1] == "SELECT id, name FROM items WHERE id = 8 LIMIT 101"
    assert rewritten[3] == "SELECT id, name FROM items WHERE id = 3000000000 LIMIT 101"


def test_a_key_that_is_not_a_number_is_checked_on_its_own(server: Server) -> None:
    """A string key where an int was seen is another template; a hostile one is refused."""
    with server.client() as c:
        assert c.post("/v1/query/simple", json=lookup(5)).status_code == 200
        text = c.post("/v1/query/simple", json=lookup("'5'"))
        assert text.status_code == 200 and text.json()["data"]["rows"][0]["id"] == 5
        hostile = c.post("/v1/query/simple", json=lookup("5; DROP TABLE items"))
        assert hostile.status_code == 403
        assert c.post("/v1/query/simple", json=lookup(6)).json()["data"]["rows"][0]["id"] == 6


def test_other_databases_render_the_template(server: Server) -> None:
    with server.client() as c:
        for key in (1, 2, 3):
            got = c.post("/v1/query/simple", json=lookup(key, db="lite"))
            assert got.status_code == 200, got.text
            assert [r["id"] for r in got.json()["data"]["rows"]] == [key]


def test_string_keys_get_their_rows_whatever_the_column_type(server: Server) -> None:
    """String keys are bound where the column takes a str (text) and run inline where it
    does not (date, uuid): each of several keys of one template gets its own row, and the
    audit shows the literal that was asked for."""
    cases = [
        ("name", lambda k: f"'item {k}'"),
        ("day", lambda k: f"'2025-01-{1 + k:02d}'"),
        ("uid", lambda k: f"'00000000-0000-0000-0000-{k:012d}'"),
    ]
    with server.client() as c:
        for column, literal in cases:
            ids = {}
            for key in (3, 4, 5, 6):
                body = {
                    "database": "pg",
                    "table": "items",
                    "query": f"SELECT id FROM items WHERE {column} = {literal(key)}",
                }
                got = c.post("/v1/query/simple", json=body)
                assert got.status_code == 200, got.text
                assert got.json()["data"]["rows"] == [{"id": key}], (column, key)
                ids[got.json()["request_id"]] = literal(key)
            lines = audit_lines(server, set(ids))
            for rid, lit in ids.items():
                assert lines[rid]["steps"][0]["rewritten"].endswith(f"= {lit} LIMIT 101")
