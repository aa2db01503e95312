"""SQLite discovery: the schema from PRAGMAs, statistics from bounded queries.

SQLite keeps no per-column statistics, so each table's distribution is computed over at most
SAMPLE_ROWS rows (one aggregate query per table plus one small DISTINCT per column), which
keeps discovery of a small file fast and of a big one bounded.
"""

from __future__ import annotations

import sqlite3

from connectors.base import FieldInfo, StatSource, TableInfo
from connectors.sampled_stats import quote, sampled_distributions
from connectors.types_map import sqlite_type

SPELLING = ("count(DISTINCT {c})", "sum({c} IS NULL)", "min({c})", "max({c})", "{c}")

MAX_TABLES = 500


def discover_sqlite(conn: sqlite3.Connection) -> list[TableInfo]:
    """Tables and views of the main schema with fields, keys and sampled distributions."""
    tables = conn.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT ?",
        (MAX_TABLES,),
    ).fetchall()
    out = []
    for name, _kind in tables:
        info = conn.execute(f"PRAGMA table_info({quote(name)})").fetchall()
        fks = {row[3] for row in conn.execute(f"PRAGMA foreign_key_list({quote(name)})")}
        rows = conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
        dists = sampled_distributions(conn.execute, quote(name), [c[1] for c in info], SPELLING)
        fields = [
            FieldInfo(
                name=col[1],
                data_type=sqlite_type(col[2]),
                nullable=not col[3] and not col[5],
                is_primary=bool(col[5]),
                is_foreign_key=col[1] in fks,
                distribution=dists.get(col[1]),
            )
            for col in info
        ]
        out.append(
            TableInfo(
                name=name,
                fields=fields,
                row_count_estimate=rows,
                row_count_source=StatSource("count(*)", exact=True),
            )
        )
    return out
