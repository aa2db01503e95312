"""DuckDB discovery: the catalog functions, plus bounded statistics per table.

Distinct counts are `approx_count_distinct` (HyperLogLog) over at most SAMPLE_ROWS rows, so a
big file is never scanned whole; row counts come from `duckdb_tables().estimated_size`.
"""

from __future__ import annotations

from typing import Any

import duckdb

from connectors.base import Distribution, FieldInfo, TableInfo
from connectors.types_map import duckdb_type, json_safe, json_safe_list

MAX_TABLES = 500
SAMPLE_ROWS = 100_000


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def discover_duckdb(cur: duckdb.DuckDBPyConnection) -> list[TableInfo]:
    """Tables and views of the file's own schemas with keys and sampled distributions."""
    tables = cur.execute(
        """
        SELECT * FROM (
            SELECT schema_name AS s, table_name AS t, estimated_size, coalesce(comment, '')
            FROM duckdb_tables() WHERE NOT internal AND database_name = current_database()
            UNION ALL
            SELECT schema_name, view_name, NULL, coalesce(comment, '') FROM duckdb_views()
            WHERE NOT internal AND NOT temporary AND database_name = current_database()
        ) ORDER BY s = 'main' DESC, s, t LIMIT ?
        """,
        [MAX_TABLES],
    ).fetchall()
    keys: dict[tuple[str, str], dict[str, set[str]]] = {}
    for schema, table, ctype, cols in cur.execute(
        "SELECT schema_name, table_name, constraint_type, constraint_column_names "
        "FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') "
        "AND database_name = current_database()"
    ).fetchall():
        kind = "pk" if ctype == "PRIMARY KEY" else "fk"
        keys.setdefault((schema, table), {}).setdefault(kind, set()).update(cols or ())
    columns: dict[tuple[str, str], list[Any]] = {}
    for row in cur.execute(
        "SELECT schema_name, table_name, column_name, data_type, is_nullable, "
        "coalesce(comment, '') FROM duckdb_columns() WHERE database_name = current_database() "
        "AND NOT internal ORDER BY schema_name, table_name, column_index"
    ).fetchall():
        columns.setdefault((row[0], row[1]), []).append(row)

    out = []
    for schema, table, estimate, comment in tables:
        cols = columns.get((schema, table), [])
        qualified = f"{_q(schema)}.{_q(table)}"
        dists = _distributions(cur, qualified, [c[2] for c in cols])
        k = keys.get((schema, table), {})
        fields = [
            FieldInfo(
                name=c[2],
                data_type=duckdb_type(c[3]),
                nullable=bool(c[4]),
                is_primary=c[2] in k.get("pk", ()),
                is_foreign_key=c[2] in k.get("fk", ()),
                description=c[5],
                distribution=dists.get(c[2]),
            )
            for c in cols
        ]
        if estimate is None:
            estimate = cur.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]
        name = table if schema == "main" else f"{schema}.{table}"
        out.append(
            TableInfo(name=name, fields=fields, row_count_estimate=estimate, description=comment)
        )
    return out


def _distributions(
    cur: duckdb.DuckDBPyConnection, qualified: str, cols: list[str]
) -> dict[str, Distribution]:
    if not cols:
        return {}
    sample = f"(SELECT * FROM {qualified} LIMIT {SAMPLE_ROWS})"
    parts = ["count(*)"]
    for c in cols:
        parts += [
            f"approx_count_distinct({_q(c)})",
            f"count(*) - count({_q(c)})",
            f"min({_q(c)})::VARCHAR",
            f"max({_q(c)})::VARCHAR",
        ]
    row = cur.execute(f"SELECT {', '.join(parts)} FROM {sample}").fetchone()
    total = row[0] or 0
    out = {}
    for i, c in enumerate(cols):
        distinct, nulls, lo, hi = row[1 + 4 * i : 5 + 4 * i]
        samples = cur.execute(
            f"SELECT DISTINCT {_q(c)}::VARCHAR FROM {sample} WHERE {_q(c)} IS NOT NULL LIMIT 5"
        ).fetchall()
        out[c] = Distribution(
            distinct_count=distinct,
            null_fraction=nulls / total if total else 0.0,
            sample_values=json_safe_list([s[0] for s in samples]),
            min_value=json_safe(lo),
            max_value=json_safe(hi),
        )
    return out
