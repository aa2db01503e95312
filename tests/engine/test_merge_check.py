"""The merge is checked on its AST: only reads of the request's own step tables pass."""

from __future__ import annotations

import pytest

from engine.errors import InvalidQuery, MergeBlocked
from engine.merge import check_merge, parse_merge, qualify

STEPS = ("s0", "s1")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('x.parquet')",
        "SELECT * FROM 'data.csv'",
        "SELECT * FROM glob('*')",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM query_table('s0')",
        "SELECT getenv('HOME')",
        "SELECT read_text('/etc/passwd')",
        "SELECT current_setting('threads')",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM req_deadbeef0000.s0",
        "PRAGMA version",
        "ATTACH 'other.db'",
        "COPY s0 TO 'out.csv'",
        "SET threads = 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "CALL pragma_version()",
        "DESCRIBE s0",
        "CREATE TABLE x AS SELECT * FROM s0",
        "INSERT INTO s0 SELECT * FROM s1",
        "SELECT * FROM s0 WHERE x IN (SELECT * FROM read_json('x.json'))",
        "WITH a AS (SELECT * FROM read_csv('x')) SELECT * FROM a",
    ],
)
def test_blocked(sql: str) -> None:
    with pytest.raises(MergeBlocked) as info:
        check_merge(parse_merge(sql), STEPS)
    assert info.value.code == "merge_blocked"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT s0.a, t.b FROM s0 JOIN s1 t ON s0.id = t.id",
            "SELECT s0.a, t.b FROM req_x.s0 AS s0 JOIN req_x.s1 AS t ON s0.id = t.id",
        ),
        (
            "WITH c AS (SELECT * FROM s1) SELECT * FROM c UNION ALL SELECT * FROM s0",
            "WITH c AS (SELECT * FROM req_x.s1 AS s1) SELECT * FROM c UNION ALL "
            "SELECT * FROM req_x.s0 AS s0",
        ),
        ("FROM s0", "SELECT * FROM req_x.s0 AS s0"),
    ],
)
def test_allowed_and_qualified(sql: str, expected: str) -> None:
    tree = parse_merge(sql)
    check_merge(tree, STEPS)
    assert qualify(tree, "req_x", STEPS) == expected


def test_cte_shadowing_a_step_is_refused() -> None:
    with pytest.raises(InvalidQuery, match="CTE 's0'"):
        check_merge(parse_merge("WITH s0 AS (SELECT 1) SELECT * FROM s0"), STEPS)
