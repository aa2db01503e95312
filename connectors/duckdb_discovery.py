"""DuckDB discovery: the catalog functions, plus bounded statistics per table.

Distinct counts are `approx_count_distinct` (HyperLogLog) over at most SAMPLE_ROWS rows, so a
big file is never scanned whole; row counts come from `duckdb_tables().estimated_size`.
"""

from __future__ import annotations

from typing import Any

import duckdb

from connectors.base import Distribution, FieldInfo, StatSource, TableInfo
from connectors.sampled_stats import quote, sampled_distributions
from connectors.types_map import duckdb_type, temporal_text

SPELLING = (
    "approx_count_distinct({c})",
    "count(*) - count({c})",
    "min({c})::VARCHAR",
    "max({c})::VARCHAR",
    "{c}::VARCHAR",
)

MAX_TABLES = 500


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
        qualified = f"{quote(schema)}.{quote(table)}"
        dists = sampled_distributions(
            cur.execute, qualified, [c[2] for c in cols], SPELLING, distinct_exact=False
        )
        k = keys.get((schema, table), {})
        fields = [
            FieldInfo(
                name=c[2],
                data_type=duckdb_type(c[3]),
                nullable=bool(c[4]),
                is_primary=c[2] in k.get("pk", ()),
                is_foreign_key=c[2] in k.get("fk", ()),
                description=c[5],
                distribution=_as_results(dists.get(c[2]), duckdb_type(c[3])),
            )
            for c in cols
        ]
        rows_from = StatSource("duckdb_tables().estimated_size", exact=False)
        if estimate is None:
            counted = cur.execute(f"SELECT count(*) FROM {qualified}").fetchone()
            estimate = int(counted[0]) if counted else None
            rows_from = StatSource("count(*)", exact=True)
        name = table if schema == "main" else f"{schema}.{table}"
        out.append(
            TableInfo(
                name=name,
                fields=fields,
                row_count_estimate=estimate,
                description=comment,
                row_count_source=rows_from if estimate is not None else None,
            )
        )
    return out


def _as_results(dist: Distribution | None, logical: str) -> Distribution | None:
    """Temporal values come back as VARCHAR (SPELLING): format them as query results."""
    if dist is not None:
        dist.min_value = temporal_text(dist.min_value, logical)
        dist.max_value = temporal_text(dist.max_value, logical)
        dist.sample_values = [temporal_text(v, logical) for v in dist.sample_values]
    return dist
