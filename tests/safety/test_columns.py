"""Column denies through every query shape: a denied column (users.ssn, users.password_hash)
may not be selected, filtered on, joined on, grouped or ordered by, passed to a function,
returned by `*`, `t.*` or a whole-row reference, nor written."""

from __future__ import annotations

import pytest

from engine.config import Config
from tests.safety.conftest import run

DENIED = {
    "plain": "SELECT ssn FROM users",
    "alias": "SELECT u.ssn AS s FROM users AS u",
    "quoted": 'SELECT "ssn" FROM users',
    "upper_case": "SELECT SSN FROM users",
    "table_qualified": "SELECT users.ssn FROM users",
    "schema_qualified": "SELECT public.users.ssn FROM public.users",
    "subquery": "SELECT s FROM (SELECT ssn AS s FROM users) x",
    "scalar_subquery": "SELECT (SELECT max(ssn) FROM users) AS m FROM users",
    "correlated_outer_ref": "SELECT (SELECT 1 WHERE u.ssn = '1') AS m FROM users u",
    "unqualified_outer_ref": "SELECT (SELECT ssn) AS m FROM users",
    "cte": "WITH c AS (SELECT ssn FROM users) SELECT * FROM c",
    "cte_renamed": "WITH c AS (SELECT ssn AS id FROM users) SELECT id FROM c",
    "star": "SELECT * FROM users",
    "qualified_star": "SELECT u.* FROM users u",
    "star_in_cte": "WITH c AS (SELECT * FROM users) SELECT id FROM c",
    "star_in_subquery": "SELECT id FROM (SELECT * FROM users) x",
    "star_through_join": "SELECT * FROM orders o JOIN users u ON u.id = o.user_id",
    "whole_row": "SELECT u FROM users u",
    "whole_row_function": "SELECT row_to_json(u) FROM users u",
    "where": "SELECT id FROM users WHERE ssn = '1'",
    "where_in_subquery": "SELECT id FROM orders WHERE user_id IN "
    "(SELECT id FROM users WHERE ssn = '1')",
    "exists": "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM users u WHERE u.ssn = o.note)",
    "join_on": "SELECT o.id FROM orders o JOIN users u ON u.ssn = o.note",
    "join_using": "SELECT o.id FROM orders o JOIN users u USING (ssn)",
    "order_by": "SELECT id FROM users ORDER BY password_hash",
    "order_by_expression": "SELECT id FROM users ORDER BY lower(ssn)",
    "group_by": "SELECT count(*) FROM users GROUP BY ssn",
    "having": "SELECT name FROM users GROUP BY name HAVING max(ssn) > '1'",
    "function_argument": "SELECT md5(ssn) FROM users",
    "nested_function": "SELECT upper(substr(ssn, 1, 3)) FROM users",
    "case": "SELECT CASE WHEN ssn IS NULL THEN 0 ELSE 1 END FROM users",
    "window_partition": "SELECT row_number() OVER (PARTITION BY ssn) FROM users",
    "window_order": "SELECT rank() OVER (ORDER BY password_hash) FROM users",
    "aggregate_filter": "SELECT count(*) FILTER (WHERE ssn > '1') FROM users",
    "union_branch": "SELECT name FROM users UNION SELECT ssn FROM users",
    "union_all_branch": "SELECT id FROM orders UNION ALL SELECT ssn FROM users",
    "intersect_branch": "SELECT note FROM orders INTERSECT SELECT ssn FROM users",
    "lateral": "SELECT o.id FROM orders o, LATERAL (SELECT ssn FROM users) x",
    "cast": "SELECT CAST(ssn AS TEXT) FROM users",
    "concat": "SELECT name || ssn FROM users",
    "count_distinct": "SELECT count(DISTINCT ssn) FROM users",
    "update_set": "UPDATE users SET ssn = 'x' WHERE id = 1",
    "update_where": "UPDATE users SET name = 'x' WHERE ssn = '1'",
    "update_from_value": "UPDATE orders SET note = u.ssn FROM users u WHERE u.id = orders.user_id",
    "delete_where": "DELETE FROM users WHERE password_hash = 'x'",
    "insert_column_list": "INSERT INTO users (id, ssn) VALUES (1, 'x')",
    "insert_select": "INSERT INTO orders (id, note) SELECT id, ssn FROM users",
    "returning_column": "UPDATE users SET name = 'x' WHERE id = 1 RETURNING ssn",
    "returning_star": "DELETE FROM users WHERE id = 1 RETURNING *",
    "on_conflict": "INSERT INTO users (id, name) VALUES (1, 'a') "
    "ON CONFLICT (id) DO UPDATE SET ssn = excluded.ssn",
}

ALLOWED = {
    "other_columns": "SELECT id, name, email, update_at FROM users",
    "count_star": "SELECT count(*) FROM users",
    "exists_star": "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM users u "
    "WHERE u.id = o.user_id)",
    "qualified_other_table": "SELECT o.note FROM orders o JOIN users u ON u.id = o.user_id",
    "star_other_table": "SELECT o.* FROM orders o JOIN users u ON u.id = o.user_id",
    "alias_named_like_denied": "SELECT name AS ssn FROM users",
    "literal": "SELECT id FROM users WHERE name = 'ssn'",
    "update_allowed": "UPDATE users SET name = 'x' WHERE id = 1",
    "insert_allowed": "INSERT INTO users (id, name) VALUES (1, 'a')",
}


# shapes whose own table (FROM / write target) is orders rather than users
ORDERS_MAIN = {
    "where_in_subquery",
    "exists",
    "join_on",
    "join_using",
    "star_through_join",
    "union_all_branch",
    "intersect_branch",
    "lateral",
    "update_from_value",
    "insert_select",
    "qualified_other_table",
    "star_other_table",
    "exists_star",
}


@pytest.mark.parametrize("name", DENIED)
def test_denied_column_is_blocked(config: Config, name: str) -> None:
    query = DENIED[name]
    outcome = run(config, query, "orders" if name in ORDERS_MAIN else "users", "postgres")
    assert outcome.block is not None, query
    assert outcome.block.stage == "RBAC_GATE", outcome.block
    assert "denied" in outcome.block.reason
    assert outcome.block.suggestion
    assert outcome.verdicts[-1].policy == "permissions.default.pg.tables.users.deny_columns"


@pytest.mark.parametrize("name", ALLOWED)
def test_allowed_shapes_pass(config: Config, name: str) -> None:
    table = "orders" if name in ORDERS_MAIN else "users"
    outcome = run(config, ALLOWED[name], table, "postgres")
    assert outcome.block is None, outcome.block


def test_star_block_suggests_listing_columns(config: Config) -> None:
    outcome = run(config, "SELECT * FROM users", "users", "postgres")
    assert outcome.block is not None
    assert "password_hash, ssn" in outcome.block.reason
    assert outcome.block.suggestion == "list the columns you need instead of `*`"


@pytest.mark.parametrize("dialect", ["mysql", "sqlite", "duckdb"])
def test_other_dialects_resolve_the_same(config: Config, dialect: str) -> None:
    quote = "`" if dialect == "mysql" else '"'
    for query in (
        f"SELECT {quote}ssn{quote} FROM users",
        "SELECT u.* FROM users u",
        "SELECT id FROM users ORDER BY ssn",
    ):
        outcome = run(config, query, "users", dialect)
        assert outcome.block is not None and outcome.block.stage == "RBAC_GATE", query
