"""Native column types -> DuckDB type names (`connectors.base.LOGICAL_TYPES`), and the small
value conversions every SQL connector shares (unique column names, JSON-safe statistics).

Decision on PostgreSQL `numeric`: a constrained `numeric(p,s)` maps to `DECIMAL(p,s)`
(p <= 38, DuckDB's limit). An unconstrained `numeric` (or one wider than 38 digits) maps to
`DECIMAL(38,10)`: values keep exact `Decimal`s in row batches, and the sink stores them with
ten fractional digits, which is what DuckDB itself does for an unconstrained NUMERIC. asyncpg
does not expose a result column's typmod, so the row path always reports `DECIMAL(38,10)` for
`numeric`; discovery (which reads the catalog) and the bulk path (ADBC reports the typmod)
report the declared `DECIMAL(p,s)`.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

UNCONSTRAINED_DECIMAL = "DECIMAL(38,10)"
MAX_DECIMAL_PRECISION = 38

# PostgreSQL type names (pg_type.typname, as asyncpg and ADBC report them).
PG_TYPES: dict[str, str] = {
    "bool": "BOOLEAN",
    "int2": "SMALLINT",
    "int4": "INTEGER",
    "int8": "BIGINT",
    "oid": "BIGINT",
    "float4": "REAL",
    "float8": "DOUBLE",
    "numeric": UNCONSTRAINED_DECIMAL,
    "money": "VARCHAR",
    "text": "VARCHAR",
    "varchar": "VARCHAR",
    "bpchar": "VARCHAR",
    "char": "VARCHAR",
    "name": "VARCHAR",
    "citext": "VARCHAR",
    "bytea": "BLOB",
    "date": "DATE",
    "time": "TIME",
    "timetz": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "interval": "INTERVAL",
    "uuid": "UUID",
    "json": "JSON",
    "jsonb": "JSON",
}

# information_schema.data_type spellings (discovery) for the PostgreSQL catalog.
PG_INFO_SCHEMA: dict[str, str] = {
    "boolean": "BOOLEAN",
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "REAL",
    "double precision": "DOUBLE",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    "character": "VARCHAR",
    "bytea": "BLOB",
    "date": "DATE",
    "time without time zone": "TIME",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "interval": "INTERVAL",
    "uuid": "UUID",
    "json": "JSON",
    "jsonb": "JSON",
}


def decimal_type(precision: int | None, scale: int | None) -> str:
    """DECIMAL(p,s), or the unconstrained fallback when p is unknown or above DuckDB's 38."""
    if precision is None or precision <= 0 or precision > MAX_DECIMAL_PRECISION:
        return UNCONSTRAINED_DECIMAL
    return f"DECIMAL({precision},{scale or 0})"


def pg_type(typname: str, typmod: int = -1) -> str:
    """A PostgreSQL type name (pg_type.typname) and optional typmod -> DuckDB type name."""
    if typname == "numeric" and typmod >= 4:
        mod = typmod - 4
        return decimal_type((mod >> 16) & 0xFFFF, mod & 0xFFFF)
    return PG_TYPES.get(typname, "VARCHAR")


def pg_info_schema_type(
    data_type: str, udt_name: str, precision: int | None, scale: int | None
) -> str:
    """An information_schema.columns row -> DuckDB type name."""
    if data_type == "numeric":
        return decimal_type(precision, scale)
    if data_type in PG_INFO_SCHEMA:
        return PG_INFO_SCHEMA[data_type]
    return PG_TYPES.get(udt_name, "VARCHAR")


# MySQL/MariaDB: information_schema.columns.DATA_TYPE (discovery).
MYSQL_INFO_SCHEMA: dict[str, str] = {
    "tinyint": "SMALLINT",
    "smallint": "SMALLINT",
    "mediumint": "INTEGER",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "float": "REAL",
    "double": "DOUBLE",
    "bit": "BIGINT",
    "year": "SMALLINT",
    "date": "DATE",
    "time": "INTERVAL",
    "datetime": "TIMESTAMP",
    "timestamp": "TIMESTAMP",
    "char": "VARCHAR",
    "varchar": "VARCHAR",
    "tinytext": "VARCHAR",
    "text": "VARCHAR",
    "mediumtext": "VARCHAR",
    "longtext": "VARCHAR",
    "enum": "VARCHAR",
    "set": "VARCHAR",
    "json": "JSON",
    "uuid": "UUID",
    "binary": "BLOB",
    "varbinary": "BLOB",
    "tinyblob": "BLOB",
    "blob": "BLOB",
    "mediumblob": "BLOB",
    "longblob": "BLOB",
}


def mysql_info_schema_type(
    data_type: str, column_type: str, precision: int | None, scale: int | None
) -> str:
    data_type = data_type.lower()
    if data_type == "decimal":
        return decimal_type(precision, scale)
    if data_type in {"tinyint", "smallint", "mediumint", "int", "bigint"} and "unsigned" in (
        column_type.lower()
    ):
        widen = {"tinyint": "SMALLINT", "smallint": "INTEGER", "mediumint": "INTEGER"}
        return widen.get(data_type, "BIGINT" if data_type == "int" else "HUGEINT")
    if data_type == "tinyint" and column_type.lower().startswith("tinyint(1)"):
        return "BOOLEAN"
    if data_type == "longtext" and column_type.lower() == "longtext":
        return "VARCHAR"
    return MYSQL_INFO_SCHEMA.get(data_type, "VARCHAR")


# SQLite: declared types follow the affinity rules of https://sqlite.org/datatype3.html.
_DECL_DECIMAL = re.compile(r"^\s*(?:decimal|numeric)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", re.I)


def sqlite_type(declared: str | None) -> str:
    """A SQLite declared column type (possibly empty) -> DuckDB type name."""
    decl = (declared or "").strip().lower()
    if not decl:
        return "VARCHAR"
    m = _DECL_DECIMAL.match(decl)
    if m:
        return decimal_type(int(m.group(1)), int(m.group(2) or 0))
    for prefix, mapped in (
        ("bigint", "BIGINT"),
        ("smallint", "SMALLINT"),
        ("boolean", "BOOLEAN"),
        ("bool", "BOOLEAN"),
        ("timestamptz", "TIMESTAMPTZ"),
        ("timestamp", "TIMESTAMP"),
        ("datetime", "TIMESTAMP"),
        ("date", "DATE"),
        ("time", "TIME"),
        ("uuid", "UUID"),
        ("json", "JSON"),
        ("decimal", UNCONSTRAINED_DECIMAL),
        ("numeric", UNCONSTRAINED_DECIMAL),
    ):
        if decl.startswith(prefix):
            return mapped
    # the affinity rules, in SQLite's own order
    if "int" in decl:
        return "BIGINT"
    if "char" in decl or "clob" in decl or "text" in decl:
        return "VARCHAR"
    if "blob" in decl:
        return "BLOB"
    if "real" in decl or "floa" in decl or "doub" in decl:
        return "DOUBLE"
    return "VARCHAR"


_DUCK_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_DUCK_ALIASES: dict[str, str] = {
    "TINYINT": "SMALLINT",
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "HUGEINT",
    "UHUGEINT": "VARCHAR",
    "FLOAT": "REAL",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "TIMESTAMP_S": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIME WITH TIME ZONE": "VARCHAR",
    "BIT": "VARCHAR",
}


def duckdb_type(name: str) -> str:
    """A DuckDB type as its API prints it -> one of LOGICAL_TYPES (nested types -> VARCHAR)."""
    upper = name.upper()
    m = _DUCK_DECIMAL.match(upper)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    if upper in _DUCK_ALIASES:
        return _DUCK_ALIASES[upper]
    if upper in {
        "BOOLEAN", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "REAL", "DOUBLE", "VARCHAR",
        "BLOB", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "INTERVAL", "UUID", "JSON",
    }:  # fmt: skip
        return upper
    return "VARCHAR"


def unique_names(names: Iterable[str]) -> list[str]:
    """Make result column names unique the same way everywhere: id, id -> id, id_1.

    A generated name never collides with a name the query itself produced.
    """
    names = list(names)
    taken = set(names)
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        n = 1
        while f"{name}_{n}" in taken or f"{name}_{n}" in seen:
            n += 1
        fresh = f"{name}_{n}"
        seen.add(fresh)
        out.append(fresh)
    return out


_AS_RESULTS = msgspec.json.Encoder(decimal_format="number")  # api.envelopes.ENCODER's format


def json_safe(value: Any) -> Any:
    """A statistics value msgspec can encode as plain JSON, formatted as query results are
    (ISO-8601 timestamps with `Z` for UTC, decimals as numbers); bytes as base64."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal | dt.datetime | dt.date | dt.time):
        return msgspec.json.decode(_AS_RESULTS.encode(value))
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def temporal_text(value: Any, logical: str) -> Any:
    """A DATE/TIMESTAMP[TZ] statistic a database gave as text (pg_stats, DuckDB's VARCHAR)
    formatted as query results are: `2024-05-06 07:08:09+00` -> `2024-05-06T07:08:09Z`.
    Anything else, or text that does not parse, is returned as it came."""
    if not isinstance(value, str):
        return value
    try:
        if logical.startswith("TIMESTAMP"):
            return json_safe(dt.datetime.fromisoformat(value))
        if logical == "DATE":
            return json_safe(dt.date.fromisoformat(value))
    except ValueError:
        return value
    return value


def json_safe_list(values: Sequence[Any] | None, limit: int = 5) -> list[Any]:
    if not values:
        return []
    return [json_safe(v) for v in list(values)[:limit]]
