"""SQLite discovery: the schema from PRAGMAs, statistics from bounded queries.

SQLite keeps no per-column statistics, so each table's distribution is computed over at most
SAMPLE_ROWS rows (one aggregate query per table plus one small DISTINCT per column), which
keeps discovery of a small file fast and of a big one bounded.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from connectors.base import Distribution, FieldInfo, TableInfo
from connectors.types_map import json_safe, json_safe_list, sqlite_type

MAX_TABLES = 500
SAMPLE_ROWS = 100_000


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def discover_sqlite(conn: sqlite3.Connection) -> list[TableInfo]:
    """Tables and views of the main schema with fields, keys and sampled distributions."""
    tables = conn.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT ?",
        (MAX_TABLES,),
    ).fetchall()
    out = []
    for name, _kind in tables:
        info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()
        fks = {row[3] for row in conn.execute(f"PRAGMA foreign_key_list({_q(name)})")}
        rows = conn.execute(f"SELECT count(*) FROM {_q(name)}").fetchone()[0]
        dists = _distributions(conn, name, [c[1] for c in info])
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
        out.append(TableInfo(name=name, fields=fields, row_count_estimate=rows))
    return out


def _distributions(conn: sqlite3.Connection, table: str, cols: list[str]) -> dict[str, Any]:
    if not cols:
        return {}
    sample = f"(SELECT * FROM {_q(table)} LIMIT {SAMPLE_ROWS})"
    parts = ["count(*)"]
    for c in cols:
        parts += [
            f"count(DISTINCT {_q(c)})",
            f"sum({_q(c)} IS NULL)",
            f"min({_q(c)})",
            f"max({_q(c)})",
        ]
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {sample}").fetchone()
    total = row[0] or 0
    out = {}
    for i, c in enumerate(cols):
        distinct, nulls, lo, hi = row[1 + 4 * i : 5 + 4 * i]
        samples = conn.execute(
            f"SELECT DISTINCT {_q(c)} FROM {sample} WHERE {_q(c)} IS NOT NULL LIMIT 5"
        ).fetchall()
        out[c] = Distribution(
            distinct_count=distinct,
            null_fraction=(nulls or 0) / total if total else 0.0,
            sample_values=json_safe_list([s[0] for s in samples]),
            min_value=json_safe(lo),
            max_value=json_safe(hi),
        )
    return out
