"""Row tuples -> Arrow for connectors whose driver only gives rows (SQLite, MariaDB).

The conversion is column by column: one list per column handed to `pa.array`, which converts
it in C, so the bulk path costs one pass over the rows, not one Python call per value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from connectors.base import Column

# How each DuckDB type travels as Arrow: the one table for the connectors and the sink.
ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "REAL": pa.float32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BLOB": pa.binary(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "INTERVAL": pa.month_day_nano_interval(),
    "UUID": pa.uuid(),
    "HUGEINT": pa.decimal128(38, 0),
}


_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def arrow_type(logical: str, *, uuid_as_text: bool = False) -> pa.DataType:
    """The Arrow type a column of this DuckDB type travels as. `uuid_as_text`: for values
    that reach DuckDB as text and are CAST there (the sink, MongoDB's flattening)."""
    if m := _DECIMAL.match(logical):
        p, s = int(m.group(1)), int(m.group(2))
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
    if uuid_as_text and logical == "UUID":
        return pa.string()
    return ARROW_TYPES.get(logical, pa.string())


def value_type(value: Any) -> str:
    """A DuckDB type name for a Python value (for drivers that report no column types)."""
    match value:
        case bool():
            return "BOOLEAN"
        case int():
            return "BIGINT"
        case float():
            return "DOUBLE"
        case decimal.Decimal():
            return "DECIMAL(38,10)"
        case str():
            return "VARCHAR"
        case bytes() | bytearray() | memoryview():
            return "BLOB"
        case dt.datetime():
            return "TIMESTAMP" if value.tzinfo is None else "TIMESTAMPTZ"
        case dt.date():
            return "DATE"
        case dt.time():
            return "TIME"
        case dt.timedelta():
            return "INTERVAL"
        case uuid.UUID():
            return "UUID"
        case dict() | list():
            return "JSON"
    return "VARCHAR"


def rows_to_arrow(columns: Sequence[Column], rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    """Row tuples -> one RecordBatch typed by the columns' DuckDB types."""
    arrays = []
    for i, col in enumerate(columns):
        values = [r[i] for r in rows]
        typ = arrow_type(col.type)
        if col.type == "JSON":
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        elif col.type == "UUID":
            storage = pa.array(
                [None if v is None else uuid.UUID(str(v)).bytes for v in values], pa.binary(16)
            )
            arrays.append(pa.ExtensionArray.from_storage(pa.uuid(), storage))
            continue
        elif col.type == "INTERVAL":
            values = [
                None if v is None else (0, v.days, (v.seconds * 10**6 + v.microseconds) * 1000)
                for v in values
            ]
        elif typ == pa.string():
            values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        arrays.append(pa.array(values, type=typ))
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])
