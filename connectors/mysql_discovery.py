"""MySQL/MariaDB discovery from information_schema, with bounded statistics.

Row counts are TABLE_ROWS (InnoDB's estimate); distinct counts are the CARDINALITY of a
single-column index where one exists; min/max/samples come from one bounded query per table
over indexed columns only (an index makes MIN/MAX a lookup), so discovery never scans a table.
"""

from __future__ import annotations

from typing import Any

from connectors.base import Distribution, FieldInfo, StatSource, TableInfo
from connectors.types_map import json_safe, json_safe_list, mysql_info_schema_type

MAX_TABLES = 500


def _q(ident: str) -> str:
    return "`" + ident.replace("`", "``") + "`"


async def _fetch(conn: Any, sql: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall() or [])


async def discover_mysql(conn: Any) -> list[TableInfo]:
    """Tables of the connection's database with keys, types and index-based statistics."""
    tables = await _fetch(
        conn,
        "SELECT TABLE_NAME, TABLE_ROWS, TABLE_COMMENT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME LIMIT %s",
        (MAX_TABLES,),
    )
    cols: dict[str, list[tuple[Any, ...]]] = {}
    for row in await _fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, "
        "NUMERIC_SCALE, IS_NULLABLE, COLUMN_KEY, COLUMN_COMMENT "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
    ):
        cols.setdefault(row[0], []).append(row)
    fks = {
        (r[0], r[1])
        for r in await _fetch(
            conn,
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL",
        )
    }
    # single-column indexes: their cardinality estimates distinct values
    index_cols: dict[tuple[str, str], int | None] = {}
    multi: dict[tuple[str, str], int] = {}
    for table, index, column, card in await _fetch(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, CARDINALITY FROM "
        "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND SEQ_IN_INDEX = 1",
    ):
        index_cols.setdefault((table, column), card)
        multi[(table, index)] = multi.get((table, index), 0) + 1
    out = []
    for name, table_rows, comment in tables:
        fields = []
        columns = cols.get(name, [])
        indexed = [c[1] for c in columns if (name, c[1]) in index_cols]
        bounds = await _bounds(conn, name, indexed)
        for _t, col, data_type, column_type, prec, scale, nullable, key, ccomment in columns:
            dist = None
            if (name, col) in index_cols:
                lo, hi, samples = bounds.get(col, (None, None, []))
                dist = Distribution(
                    distinct_count=index_cols[(name, col)],
                    sample_values=samples,
                    min_value=lo,
                    max_value=hi,
                    sources={
                        # InnoDB estimates cardinality from a few random index pages
                        "distinct_count": StatSource(
                            "information_schema.statistics.cardinality", exact=False
                        ),
                        "sample_values": StatSource("SELECT DISTINCT ... LIMIT 5", exact=True),
                        "min_value": StatSource("MIN() over the index", exact=True),
                        "max_value": StatSource("MAX() over the index", exact=True),
                    },
                )
            fields.append(
                FieldInfo(
                    name=col,
                    data_type=mysql_info_schema_type(data_type, column_type, prec, scale),
                    nullable=nullable == "YES",
                    is_primary=key == "PRI",
                    is_foreign_key=(name, col) in fks,
                    description=ccomment or "",
                    distribution=dist,
                )
            )
        out.append(
            TableInfo(
                name=name,
                fields=fields,
                row_count_estimate=table_rows,
                description=comment or "",
                row_count_source=None
                if table_rows is None
                else StatSource("information_schema.tables.table_rows", exact=False),
            )
        )
    return out


async def _bounds(conn: Any, table: str, columns: list[str]) -> dict[str, Any]:
    """MIN/MAX (index lookups) and up to five sample values of each indexed column."""
    if not columns:
        return {}
    parts = [f"MIN({_q(c)}), MAX({_q(c)})" for c in columns]
    row = (await _fetch(conn, f"SELECT {', '.join(parts)} FROM {_q(table)}"))[0]
    out = {}
    for i, c in enumerate(columns):
        samples = await _fetch(
            conn,
            f"SELECT DISTINCT {_q(c)} FROM {_q(table)} WHERE {_q(c)} IS NOT NULL "
            f"ORDER BY {_q(c)} LIMIT 5",
        )
        out[c] = (
            json_safe(row[2 * i]),
            json_safe(row[2 * i + 1]),
            json_safe_list([s[0] for s in samples]),
        )
    return out
