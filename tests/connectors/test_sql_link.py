"""Snapshots of the link-filter rewrite (connectors/sql_link.py) for every dialect."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from connectors.base import LinkFilter, Statement
from connectors.sql_link import LinkRewriteError, apply_link, link_values, pg_array_type

STYLES = {"postgres": "dollar", "mysql": "format", "sqlite": "qmark", "duckdb": "qmark"}
LINK = LinkFilter("customer_id", [3, 1, None, 2, 3], "BIGINT")

CASES = [
    # plain SELECT with an alias: the predicate joins the outermost WHERE, qualified
    (
        "SELECT * FROM orders o WHERE o.total > 5",
        {
            "postgres": "SELECT * FROM orders AS o WHERE o.total > 5 "
            "AND o.customer_id = ANY(CAST($1 AS BIGINT[]))",
            "mysql": "SELECT * FROM orders AS o WHERE o.total > 5 "
            "AND o.customer_id IN (%s, %s, %s)",
            "sqlite": "SELECT * FROM orders AS o WHERE o.total > 5 AND o.customer_id IN (?, ?, ?)",
        },
    ),
    # a renamed projection is filtered at its source expression
    (
        "SELECT c.id AS customer_id, c.name FROM customers c JOIN x ON x.a = c.id",
        {
            "postgres": "SELECT c.id AS customer_id, c.name FROM customers AS c "
            "JOIN x ON x.a = c.id WHERE c.id = ANY(CAST($1 AS BIGINT[]))",
            "duckdb": "SELECT c.id AS customer_id, c.name FROM customers AS c "
            "JOIN x ON x.a = c.id WHERE c.id IN (?, ?, ?)",
        },
    ),
    # an OR in the existing WHERE keeps its parentheses
    (
        "SELECT id, customer_id FROM orders WHERE a = 1 OR b = 2",
        {
            "sqlite": "SELECT id, customer_id FROM orders WHERE (a = 1 OR b = 2) "
            "AND customer_id IN (?, ?, ?)",
        },
    ),
    # aggregates, DISTINCT, LIMIT, set operations and windows are wrapped
    (
        "SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id",
        {
            "postgres": "SELECT * FROM (SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY "
            "customer_id) AS _sluice_link WHERE _sluice_link.customer_id = "
            "ANY(CAST($1 AS BIGINT[]))",
            "mysql": "SELECT * FROM (SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY "
            "customer_id) AS _sluice_link WHERE _sluice_link.customer_id IN (%s, %s, %s)",
        },
    ),
    (
        "SELECT DISTINCT customer_id FROM orders",
        {
            "sqlite": "SELECT * FROM (SELECT DISTINCT customer_id FROM orders) AS _sluice_link "
            "WHERE _sluice_link.customer_id IN (?, ?, ?)",
        },
    ),
    (
        "SELECT * FROM orders ORDER BY id LIMIT 10",
        {
            "duckdb": "SELECT * FROM (SELECT * FROM orders ORDER BY id LIMIT 10) AS _sluice_link "
            "WHERE _sluice_link.customer_id IN (?, ?, ?)",
        },
    ),
    (
        "SELECT customer_id FROM a UNION SELECT customer_id FROM b",
        {
            "postgres": "SELECT * FROM (SELECT customer_id FROM a UNION SELECT customer_id FROM b) "
            "AS _sluice_link WHERE _sluice_link.customer_id = ANY(CAST($1 AS BIGINT[]))",
        },
    ),
    (
        "SELECT customer_id, row_number() OVER (ORDER BY id) AS r FROM orders",
        {
            "sqlite": "SELECT * FROM (SELECT customer_id, ROW_NUMBER() OVER (ORDER BY id) AS r "
            "FROM orders) AS _sluice_link WHERE _sluice_link.customer_id IN (?, ?, ?)",
        },
    ),
    # a literal % survives the driver's %-formatting once parameters exist
    (
        "SELECT * FROM orders WHERE note LIKE 'a%'",
        {
            "mysql": "SELECT * FROM orders WHERE note LIKE 'a%%' AND customer_id IN (%s, %s, %s)",
            "postgres": "SELECT * FROM orders WHERE note LIKE 'a%' "
            "AND customer_id = ANY(CAST($1 AS BIGINT[]))",
        },
    ),
]


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"), [(sql, d, e) for sql, exp in CASES for d, e in exp.items()]
)
def test_rewrite_snapshot(sql: str, dialect: str, expected: str) -> None:
    out = apply_link(Statement(sql), LINK, dialect=dialect, param_style=STYLES[dialect])
    assert out.text == expected
    assert list(out.params) == ([[1, 2, 3]] if dialect == "postgres" else [1, 2, 3])


def test_existing_parameters_keep_their_numbers() -> None:
    pg = apply_link(
        Statement("SELECT * FROM t WHERE a = $1 AND b = $2", params=(7, 8)),
        LINK,
        dialect="postgres",
        param_style="dollar",
    )
    assert pg.text.endswith("customer_id = ANY(CAST($3 AS BIGINT[]))")
    assert list(pg.params) == [7, 8, [1, 2, 3]]
    my = apply_link(
        Statement("SELECT * FROM t WHERE a = %s AND b LIKE 'x%%'", params=(7,)),
        LINK,
        dialect="mysql",
        param_style="format",
    )
    assert my.text == (
        "SELECT * FROM t WHERE (a = %s AND b LIKE 'x%%') AND customer_id IN (%s, %s, %s)"
    )
    assert list(my.params) == [7, 1, 2, 3]
    # a positional parameter after WHERE (ORDER BY) would shift: the query is wrapped instead
    q = apply_link(
        Statement("SELECT * FROM t WHERE a = ? ORDER BY abs(b - ?)", params=(1, 2)),
        LINK,
        dialect="sqlite",
        param_style="qmark",
    )
    assert q.text.startswith("SELECT * FROM (SELECT")
    assert list(q.params) == [1, 2, 1, 2, 3]


def test_values_are_deduplicated_sorted_and_never_pasted() -> None:
    hostile = "x'); DROP TABLE t; --"
    out = apply_link(
        Statement("SELECT * FROM t"),
        LinkFilter("k", ["b", hostile, "b", None], "VARCHAR"),
        dialect="sqlite",
        param_style="qmark",
    )
    assert "DROP" not in out.text
    assert list(out.params) == sorted(["b", hostile])


def test_empty_link_matches_nothing() -> None:
    out = apply_link(
        Statement("SELECT * FROM t"),
        LinkFilter("k", [None], "BIGINT"),
        dialect="mysql",
        param_style="format",
    )
    assert out.text == "SELECT * FROM t WHERE 1 = 0"
    assert list(out.params) == []


def test_array_types_follow_the_parent_type() -> None:
    assert pg_array_type("DECIMAL(12,2)") == "numeric[]"
    assert pg_array_type("UUID") == "uuid[]"
    assert pg_array_type("TIMESTAMPTZ") == "timestamptz[]"
    assert pg_array_type("VARCHAR") == "text[]"
    assert link_values([uuid.UUID(int=2), uuid.UUID(int=1)]) == [uuid.UUID(int=1), uuid.UUID(int=2)]
    assert link_values([Decimal("2.5"), Decimal("1.0"), None]) == [Decimal("1.0"), Decimal("2.5")]


def test_unparseable_or_non_select_is_refused() -> None:
    with pytest.raises(LinkRewriteError):
        apply_link(Statement("DELETE FROM t"), LINK, dialect="postgres", param_style="dollar")
    with pytest.raises(LinkRewriteError):
        apply_link(Statement("SELEC nonsense FROM"), LINK, dialect="postgres", param_style="dollar")
