"""What a statement touches, as RBAC_GATE sees it: tables with their operation class, CTE
scoping, the statement's own tables, and the parse-once caches."""

from __future__ import annotations

import pytest
import sqlglot

from safety.languages.sql_access import main_tables, table_access
from safety.languages.sql_analysis import analyse_sql


def access(sql: str, dialect: str = "postgres") -> list[tuple[str, str]]:
    return [(ref.display, op) for ref, op in table_access(sqlglot.parse_one(sql, read=dialect))]


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        ("SELECT a FROM t JOIN u ON t.id = u.id", "postgres", [("t", "SELECT"), ("u", "SELECT")]),
        ("WITH c AS (SELECT * FROM t) SELECT * FROM c", "postgres", [("t", "SELECT")]),
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", "postgres", [("t", "SELECT")]),
        (
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            "postgres",
            [("b", "SELECT")],
        ),  # a CTE is not visible to an earlier one: b there is a table
        (
            "WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r",
            "postgres",
            [],
        ),
        ("SELECT * FROM public.t", "postgres", [("public.t", "SELECT")]),
        ("SELECT * FROM db.sch.t", "postgres", [("db.sch.t", "SELECT")]),
        ("INSERT INTO t (id) SELECT id FROM u", "postgres", [("t", "INSERT"), ("u", "SELECT")]),
        ("INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING", "postgres", [("t", "INSERT")]),
        (
            "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 1",
            "postgres",
            [("t", "INSERT"), ("t", "UPDATE")],
        ),
        (
            "INSERT INTO t (id) VALUES (1) ON DUPLICATE KEY UPDATE v = 1",
            "mysql",
            [("t", "INSERT"), ("t", "UPDATE")],
        ),
        (
            "UPDATE t SET v = u.v FROM u WHERE t.id = u.id",
            "postgres",
            [("t", "UPDATE"), ("u", "SELECT")],
        ),
        (
            "DELETE FROM t USING u WHERE t.id = u.id RETURNING t.id",
            "postgres",
            [("t", "DELETE"), ("t", "SELECT"), ("u", "SELECT")],
        ),
        (
            "DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id",
            "mysql",
            [("t1", "DELETE"), ("t2", "DELETE")],
        ),
        ("CREATE TABLE n AS SELECT * FROM t", "postgres", [("n", "DDL"), ("t", "SELECT")]),
        ("CREATE INDEX ix ON t (id)", "postgres", [("t", "DDL")]),
        ("SELECT * INTO n FROM t", "postgres", [("n", "DDL"), ("t", "SELECT")]),
        ("SELECT * FROM generate_series(1, 3) g", "postgres", []),
    ],
)
def test_table_access(sql: str, dialect: str, expected: list[tuple[str, str]]) -> None:
    assert sorted(access(sql, dialect)) == sorted(expected)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", ["t"]),
        ("WITH c AS (SELECT * FROM u) SELECT * FROM c", ["u"]),
        ("SELECT * FROM (SELECT * FROM u) x JOIN t ON true", ["u", "t"]),
        ("SELECT 1 UNION SELECT a FROM t", ["t"]),
        ("UPDATE t SET v = 1 WHERE id IN (SELECT id FROM u)", ["t"]),
        ("SELECT (SELECT max(id) FROM u)", []),
    ],
)
def test_main_tables(sql: str, expected: list[str]) -> None:
    got = [r.display for r in main_tables(sqlglot.parse_one(sql, read="postgres"))]
    assert got == expected


def test_analysis_is_cached_per_dialect_and_text() -> None:
    a = analyse_sql("postgres", "SELECT id FROM t")
    assert analyse_sql("postgres", "SELECT id FROM t") is a
    assert analyse_sql("mysql", "SELECT id FROM t") is not a


def test_explain_is_a_read_and_explain_analyze_the_inner_statement() -> None:
    plain = analyse_sql("postgres", "EXPLAIN DELETE FROM t WHERE id = 1")
    assert plain.operation == "SELECT" and plain.access == ((plain.access[0][0], "SELECT"),)
    analyze = analyse_sql("postgres", "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t WHERE id = 1")
    assert analyze.operation == "DELETE"
    assert not plain.returns_rows  # a plan is not capped


def test_long_texts_are_not_cached() -> None:
    from safety.text_cache import CACHE_MAX_CHARS

    long = "SELECT id FROM t WHERE name IN (" + ", ".join(["'x'"] * CACHE_MAX_CHARS) + ")"
    first = analyse_sql("postgres", long)
    assert first.error is None and analyse_sql("postgres", long) is not first
