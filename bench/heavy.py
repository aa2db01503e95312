"""The heavy requests of issue 11's event-loop table, as bodies for a server whose `shop` and
`shop_slow` databases hold the tables of `PG_SETUP` (tests/isolation and bench/isolation.py
both use them)."""

from __future__ import annotations

from typing import Any

Heavy = tuple[str, str, dict[str, Any]]  # (name, path, JSON body)

PG_SETUP = [
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(12,2))",
    "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 2000) g",
    "CREATE TABLE people (id int PRIMARY KEY, name text, email text)",
    "INSERT INTO people SELECT g, 'person ' || g, 'p' || g || '@example.com' "
    "FROM generate_series(1, 300) g",
    "CREATE TABLE secrets (id int PRIMARY KEY, token text)",
    "INSERT INTO secrets VALUES (1, 'hunter2'), (2, 'swordfish')",
    # one million narrow rows: the simple path's large-answer cases
    "CREATE TABLE big (id bigint, label text)",
    "INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1000000) g",
    "ANALYZE",
]


def nested_flow_yaml(target: int = 200_000) -> str:
    inner = ", ".join(f"{{k{i}: [v, {{w: [1, 2, {{x: y}}]}}]}}" for i in range(target // 40))
    return "steps: [" * 8 + inner + "]" * 8 + "\n"


def flat_yaml(target: int = 870_000) -> str:
    lines = [f"key_{i:07d}: value number {i}" for i in range(target // 34)]
    return "labels_like:\n" + "\n".join(f"  {line}" for line in lines) + "\n"


def in_list_sql(target: int = 85_000) -> str:
    values = ", ".join(str(i) for i in range(1, target // 6))
    return f"SELECT id, name FROM items WHERE id IN ({values})"


def case_merge(target: int = 90_000) -> str:
    whens = " ".join(f"WHEN a.id = {i} THEN 'label {i}'" for i in range(target // 32))
    return f"SELECT a.id, CASE {whens} ELSE 'other' END AS label FROM s0 a"


def chain(n: int, **extra: object) -> dict[str, Any]:
    steps = [
        {
            "step_id": f"s{i}",
            "database": "shop",
            "table": "items",
            "query": "SELECT id FROM items",
            **({"depends_on": [f"s{i - 1}"], "link_from": "id", "link_to": "id"} if i else {}),
        }
        for i in range(n)
    ]
    return {"steps": steps, "merge": f"SELECT count(*) FROM s{n - 1}", **extra}


def heavy_requests() -> list[Heavy]:
    step = {
        "step_id": "s0",
        "database": "shop_slow",
        "table": "items",
        "query": "SELECT id FROM items",
    }
    return [
        ("200 KB nested-flow YAML run config", "/v1/runs", {"config": nested_flow_yaml()}),
        ("870 KB flat YAML run config", "/v1/runs", {"config": flat_yaml()}),
        (
            "85 KB SQL IN list",
            "/v1/query/simple",
            {"database": "shop_slow", "table": "items", "query": in_list_sql()},
        ),
        ("dry run of a 2,000-step chain", "/v1/query", chain(2000, dry_run=True)),
        (
            "518 KB merge made of a large CASE",
            "/v1/query",
            {"steps": [step], "merge": case_merge(518_000)},
        ),
        (
            "96 KB merge made of a large CASE",
            "/v1/query",
            {"steps": [step], "merge": case_merge()},
        ),
        (
            "simple query returning 1M rows",
            "/v1/query/simple",
            {"database": "shop_slow", "table": "big", "query": "SELECT id FROM big"},
        ),
    ]
