"""DynamoDB items (typed attribute values) -> plain Python documents for the row shaper.

boto3's TypeDeserializer turns `{"N": "1.5"}` into Decimal, `{"SS": [...]}` into a set,
`{"B": ...}` into a Binary; this module then makes them what `connectors.mongo_flatten`
types consistently:

- a number: an int when it is whole and fits BIGINT, else a Decimal (a column of both is
  DECIMAL(38,10), exact; numbers of 28 or more integer digits that are not whole do not fit it
  and become NULL, as in the MongoDB connector); inside a map or list, whole numbers are JSON
  integers and others JSON numbers (floats);
- a string set or number set: a sorted JSON list; a binary set: a sorted list of base64;
- binary: bytes (BLOB); a map or list: JSON; NULL: None; BOOL: bool.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

_DESERIALIZER = TypeDeserializer()
_BIGINT = 2**63


def to_document(item: Mapping[str, Any]) -> dict[str, Any]:
    """One item (attribute name -> typed value) as a document of plain values."""
    out: dict[str, Any] = {}
    for name, typed in item.items():
        out[name] = _top(_DESERIALIZER.deserialize(typed))
    return out


def _top(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return _number(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, set | frozenset | dict | list):
        return _nested(value)
    return value


def _number(value: decimal.Decimal) -> int | decimal.Decimal:
    if value == value.to_integral_value() and abs(value) < _BIGINT:
        return int(value)
    return value


def _nested(value: Any) -> Any:
    """A value inside a map/list/set: JSON data only."""
    if isinstance(value, decimal.Decimal):
        n = _number(value)
        return n if isinstance(n, int) else float(n)
    if isinstance(value, Binary):
        return base64.b64encode(bytes(value.value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nested(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_nested(v) for v in value)
    return value
