"""MongoDB documents -> typed rows: one column per top-level field, stable across batches.

Rules (what a user sees in a MongoDB step's result):

- Columns are the union of the top-level fields seen so far, in first-seen order. A batch that
  brings a new field appends it; earlier columns keep their place, so each batch's `columns`
  is a superset of the previous batch's (the engine's sink adds the new columns). A field a
  document lacks is None in its row.
- Value -> column type: bool BOOLEAN, int/Int64 BIGINT, float DOUBLE, str VARCHAR, ObjectId
  VARCHAR (24-hex string), datetime TIMESTAMPTZ (aware, UTC), Decimal128 DECIMAL(38,10) (a
  Python Decimal; as PostgreSQL's unconstrained numeric), bytes/Binary BLOB, UUID (binary
  subtype 4) UUID, embedded document or array JSON (Python dict/list whose nested BSON values
  are made JSON-friendly: ObjectId/Decimal128/UUID as strings, datetimes as ISO 8601 strings,
  binary as base64). Anything else (regex, timestamp, code, min/max key) is VARCHAR text.
- A field's type is fixed by the batch in which the field first appears (VARCHAR when it is
  null in every document of that batch). Mixed types within that batch:
  only BIGINT and DOUBLE -> DOUBLE; only BIGINT and DECIMAL -> DECIMAL; only documents and
  arrays -> JSON; any other mix ->
  VARCHAR (containers as JSON text, scalars as text).
- A later batch never changes a column's type: its values are converted to it (int -> DOUBLE,
  anything -> VARCHAR text, scalars in a JSON column as JSON text). A value that cannot be
  represented exactly in the established type (1.5 in a BIGINT column, "abc" in a TIMESTAMPTZ
  column, a Decimal128 NaN or beyond 28 integer digits) becomes None.
- A BSON date outside Python's datetime range arrives as `DatetimeMS` and is VARCHAR text of
  its milliseconds since the epoch.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import pyarrow as pa
from bson import Binary, Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS

from connectors.arrow_rows import arrow_type
from connectors.base import Batch, Column

DECIMAL_TYPE = "DECIMAL(38,10)"
_DECIMAL_LIMIT = decimal.Decimal(10) ** 28
_DECIMAL_QUANTUM = decimal.Decimal(1).scaleb(-10)
_DECIMAL_CTX = decimal.Context(prec=38)
_NONE = type(None)

# exact Python type -> column type; subclasses (SON, RawBSON...) fall back to _kind_slow
_KINDS: dict[type, str] = {
    bool: "BOOLEAN",
    int: "BIGINT",
    Int64: "BIGINT",
    float: "DOUBLE",
    str: "VARCHAR",
    ObjectId: "VARCHAR",
    dt.datetime: "TIMESTAMPTZ",
    Decimal128: DECIMAL_TYPE,
    decimal.Decimal: DECIMAL_TYPE,  # DynamoDB numbers (connectors.dynamodb_items)
    bytes: "BLOB",
    Binary: "BLOB",
    uuid.UUID: "UUID",
    dict: "JSON",
    list: "JSON",
}

# column type -> the Python types that need no conversion in it
_NATIVE: dict[str, frozenset[type]] = {
    "BOOLEAN": frozenset({bool}),
    "BIGINT": frozenset({int, Int64}),
    "DOUBLE": frozenset({float}),
    "VARCHAR": frozenset({str}),
    "TIMESTAMPTZ": frozenset({dt.datetime}),
    "BLOB": frozenset({bytes}),
    "UUID": frozenset({uuid.UUID}),
    DECIMAL_TYPE: frozenset({decimal.Decimal}),
    "JSON": frozenset(),  # nested BSON values always need a pass
}


def kind_of(value: Any) -> str:
    """The column type a single non-null BSON value maps to."""
    kind = _KINDS.get(type(value))
    return kind if kind is not None else _kind_slow(value)


def _kind_slow(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, Mapping | list | tuple):
        return "JSON"
    if isinstance(value, dt.datetime):
        return "TIMESTAMPTZ"
    if isinstance(value, uuid.UUID):
        return "UUID"
    if isinstance(value, bytes):
        return "BLOB"
    return "VARCHAR"


def resolve(kinds: set[str]) -> str:
    """One column type for the kinds seen in a field (see the module docstring)."""
    if not kinds:
        return "VARCHAR"
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds == {"BIGINT", "DOUBLE"}:
        return "DOUBLE"
    if kinds == {"BIGINT", DECIMAL_TYPE}:
        return DECIMAL_TYPE  # exact: whole numbers and decimals of one field
    return "VARCHAR"


# -- value conversions -------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A nested BSON value as plain JSON data (dict/list/str/int/float/bool/None)."""
    if value is None or isinstance(value, str | bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DatetimeMS):
        return int(value)
    return str(value)  # ObjectId hex, Decimal128 text, regex, timestamp...


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC) if value.tzinfo is not dt.UTC else value


def text(value: Any) -> str:
    """A value as VARCHAR text: containers as JSON, datetimes ISO 8601, booleans true/false."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return msgspec.json.encode(jsonable(value)).decode()
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DatetimeMS):
        return str(int(value))
    return str(value)


def to_decimal(value: Any) -> decimal.Decimal | None:
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int | float | str):
        try:
            value = decimal.Decimal(value)
        except decimal.InvalidOperation:
            return None
    if not isinstance(value, decimal.Decimal) or not value.is_finite():
        return None
    if abs(value) >= _DECIMAL_LIMIT:
        return None
    # DECIMAL(38,10): round to ten fractional digits, as the sink would store it
    return value.quantize(_DECIMAL_QUANTUM, context=_DECIMAL_CTX)


def _to_bigint(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, Decimal128 | decimal.Decimal):
        d = value.to_decimal() if isinstance(value, Decimal128) else value
        if d.is_finite() and d == d.to_integral_value() and abs(d) < 2**63:
            return int(d)
    return None


def _to_double(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Decimal128):
        return float(value.to_decimal())
    if isinstance(value, decimal.Decimal):
        return float(value)
    return None


def _to_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return _utc(value)
    return None


def _to_blob(value: Any) -> bytes | None:
    if isinstance(value, uuid.UUID):
        return value.bytes
    return bytes(value) if isinstance(value, bytes) else None


def _to_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def _to_json(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return jsonable(value)
    # a scalar that arrives in a JSON column travels as JSON text so DuckDB can parse it
    return msgspec.json.encode(jsonable(value)).decode()


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "BOOLEAN": _to_bool,
    "BIGINT": _to_bigint,
    "DOUBLE": _to_double,
    "VARCHAR": text,
    "TIMESTAMPTZ": _to_timestamp,
    "BLOB": _to_blob,
    "UUID": _to_uuid,
    DECIMAL_TYPE: to_decimal,
    "JSON": _to_json,
}


def convert_column(values: list[Any], column_type: str) -> list[Any]:
    """Values of one field as the column's type; untouched when they already are."""
    native = _NATIVE[column_type]
    present = set(map(type, values))
    present.discard(_NONE)
    if present <= native:
        return values
    conv = CONVERTERS[column_type]
    return [None if v is None else conv(v) for v in values]


# -- the shaper --------------------------------------------------------------------------


class RowShaper:
    """Turns successive batches of documents into batches with one stable column set."""

    def __init__(self) -> None:
        self.columns: list[Column] = []
        self._types: dict[str, str] = {}
        # fields whose values were all ObjectIds when first seen (now VARCHAR hex strings)
        self.objectid_columns: frozenset[str] = frozenset()

    def _columns_for(self, docs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Register new fields (typed from this batch) and return every column's raw values."""
        types = self._types
        new: list[str] = []
        if len(docs) == 1:
            new = [k for k in docs[0] if k not in types]
        else:
            seen: dict[str, None] = {}
            for doc in docs:
                for key in doc:
                    if key not in types and key not in seen:
                        seen[key] = None
            new = list(seen)
        columns = [[doc.get(c.name) for doc in docs] for c in self.columns]
        for key in new:
            values = [doc.get(key) for doc in docs]
            kinds = {kind_of(v) for v in values if v is not None}
            typ = resolve(kinds)
            if (
                typ == "VARCHAR"
                and kinds
                and all(isinstance(v, ObjectId) for v in values if v is not None)
            ):
                self.objectid_columns |= {str(key)}
            types[str(key)] = typ
            self.columns.append(Column(str(key), typ))
            columns.append(values)
        return columns

    def shape(self, docs: Sequence[Mapping[str, Any]]) -> tuple[list[Column], list[list[Any]]]:
        """Column list (a superset of the previous call's) and converted column values."""
        raw = self._columns_for(docs)
        cols = list(self.columns)
        return cols, [convert_column(v, c.type) for v, c in zip(raw, cols, strict=True)]

    def rows(self, docs: Sequence[Mapping[str, Any]]) -> Batch:
        """The documents as a row batch (tuples)."""
        cols, values = self.shape(docs)
        rows = list(zip(*values, strict=True)) if cols else [() for _ in docs]
        return Batch(cols, rows=rows)

    def arrow(self, docs: Sequence[Mapping[str, Any]]) -> Batch:
        """The documents as one Arrow record batch typed like the sink's tables."""
        cols, values = self.shape(docs)
        arrays = [to_arrow(v, c.type) for v, c in zip(values, cols, strict=True)]
        batch = pa.RecordBatch.from_arrays(arrays, names=[c.name for c in cols])
        return Batch(cols, arrow=batch)


def to_arrow(values: list[Any], column_type: str) -> pa.Array:
    """One converted column as Arrow; JSON and UUID travel as text (the sink CASTs them)."""
    if column_type == "JSON":
        enc = msgspec.json.encode
        values = [v if v is None or isinstance(v, str) else enc(v).decode() for v in values]
    elif column_type == "UUID":
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, arrow_type(column_type, uuid_as_text=True))
