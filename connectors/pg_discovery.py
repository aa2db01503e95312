"""PostgreSQL discovery from the catalog and pg_stats (never ANALYZE, never a full scan).

Tables of every non-system schema, named "schema.table" unless the schema is public; field
types as DuckDB names; distributions from pg_stats (n_distinct < 0 is a fraction of
reltuples; samples from most_common_vals, min/max from histogram_bounds); row counts from
reltuples, with an exact count only for never-analyzed tables of a few pages.
"""

from __future__ import annotations

from typing import Any

from connectors.base import Distribution, FieldInfo, StatSource, TableInfo
from connectors.types_map import json_safe, pg_type, temporal_text

MAX_TABLES = 500
SMALL_TABLE_PAGES = 128  # 1 MiB: counting it exactly is cheaper than guessing

TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.reltuples::float8 AS reltuples, c.relpages,
       coalesce(obj_description(c.oid, 'pg_class'), '') AS description
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname = 'public' DESC, n.nspname, c.relname
LIMIT $1
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, t.typname, a.atttypmod, a.attnotnull,
       coalesce(col_description(a.attrelid, a.attnum), '') AS description
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

KEYS_SQL = """
SELECT conrelid, contype::text AS contype, conkey FROM pg_constraint
WHERE conrelid = ANY($1::oid[]) AND contype IN ('p', 'f')
"""

STATS_SQL = """
SELECT schemaname, tablename, attname, null_frac::float8, n_distinct::float8,
       most_common_vals::text::text[] AS mcv, histogram_bounds::text::text[] AS hist
FROM pg_stats
WHERE (schemaname, tablename) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


async def discover(conn: Any) -> list[TableInfo]:
    """Tables, fields and distributions of every user schema (at most MAX_TABLES)."""
    tables = await conn.fetch(TABLES_SQL, MAX_TABLES)
    if not tables:
        return []
    oids = [t["oid"] for t in tables]
    columns: dict[int, list[Any]] = {}
    for row in await conn.fetch(COLUMNS_SQL, oids):
        columns.setdefault(row["attrelid"], []).append(row)
    primary: dict[int, set[int]] = {}
    foreign: dict[int, set[int]] = {}
    for row in await conn.fetch(KEYS_SQL, oids):
        target = primary if row["contype"] == "p" else foreign
        target.setdefault(row["conrelid"], set()).update(row["conkey"] or ())
    stats: dict[tuple[str, str, str], Any] = {}
    for row in await conn.fetch(
        STATS_SQL, [t["nspname"] for t in tables], [t["relname"] for t in tables]
    ):
        stats[(row["schemaname"], row["tablename"], row["attname"])] = row

    out: list[TableInfo] = []
    for t in tables:
        schema, rel = t["nspname"], t["relname"]
        reltuples = t["reltuples"]
        rows: int | None = int(reltuples) if reltuples and reltuples > 0 else None
        rows_from = StatSource("pg_class.reltuples", exact=False) if rows is not None else None
        if rows is None and t["relpages"] <= SMALL_TABLE_PAGES:
            quoted = f"{_quote(schema)}.{_quote(rel)}"
            try:
                rows = await conn.fetchval(f"SELECT count(*) FROM {quoted}")
                rows_from = StatSource("count(*)", exact=True)
            except Exception:
                rows = None
        fields = []
        for col in columns.get(t["oid"], []):
            logical = pg_type(col["typname"], col["atttypmod"])
            stat = stats.get((schema, rel, col["attname"]))
            fields.append(
                FieldInfo(
                    name=col["attname"],
                    data_type=logical,
                    nullable=not col["attnotnull"],
                    is_primary=col["attnum"] in primary.get(t["oid"], ()),
                    is_foreign_key=col["attnum"] in foreign.get(t["oid"], ()),
                    description=col["description"],
                    distribution=_distribution(stat, logical, reltuples) if stat else None,
                )
            )
        name = rel if schema == "public" else f"{schema}.{rel}"
        out.append(
            TableInfo(
                name=name,
                fields=fields,
                row_count_estimate=rows,
                description=t["description"],
                row_count_source=rows_from,
            )
        )
    return out


def _distribution(stat: Any, logical: str, reltuples: float) -> Distribution:
    n_distinct = stat["n_distinct"]
    distinct: int | None
    if n_distinct is None:
        distinct = None
    elif n_distinct >= 0:
        distinct = int(n_distinct)
    else:
        distinct = round(-n_distinct * reltuples) if reltuples > 0 else None
    mcv = [_typed(v, logical) for v in (stat["mcv"] or [])]
    hist = [_typed(v, logical) for v in (stat["hist"] or [])]
    bounds = hist or sorted_or_none(mcv)
    samples_from = "pg_stats.most_common_vals" if mcv else "pg_stats.histogram_bounds"
    bounds_from = "pg_stats.histogram_bounds" if hist else "pg_stats.most_common_vals"
    # ANALYZE samples the table: every pg_stats figure is an estimate (a minimum from the
    # histogram is the smallest value the sample saw, not the table's)
    return Distribution(
        distinct_count=distinct,
        null_fraction=stat["null_frac"],
        sample_values=mcv[:5] if mcv else hist[:5],
        min_value=bounds[0] if bounds else None,
        max_value=bounds[-1] if bounds else None,
        sources={
            "distinct_count": StatSource("pg_stats.n_distinct", exact=False),
            "null_fraction": StatSource("pg_stats.null_frac", exact=False),
            "sample_values": StatSource(samples_from, exact=False),
            "min_value": StatSource(bounds_from, exact=False),
            "max_value": StatSource(bounds_from, exact=False),
        },
    )


def sorted_or_none(values: list[Any]) -> list[Any]:
    try:
        return sorted(v for v in values if v is not None)
    except TypeError:
        return []


def _typed(text: str | None, logical: str) -> Any:
    """pg_stats keeps values as text; give numbers and booleans back as JSON numbers/bools."""
    if text is None:
        return None
    try:
        if logical in {"SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}:
            return int(text)
        if logical in {"REAL", "DOUBLE"}:
            return float(text)
        if logical == "BOOLEAN":
            return text in {"t", "true"}
    except ValueError:
        return text
    return json_safe(temporal_text(text, logical))


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'
