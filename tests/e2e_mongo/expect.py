"""What sluice should answer, computed from what PyMongo reads from the same server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from bson import ObjectId


def json_value(value: Any) -> Any:
    """A BSON value as it appears in a JSON response (mongo_flatten's rules)."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    return value


def table(docs: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (union of top-level fields, first seen first) and rows (None for a missing
    field), as the response's `columns` and `rows`."""
    docs = list(docs)
    columns: dict[str, None] = {}
    for doc in docs:
        columns.update(dict.fromkeys(doc))
    rows = [{c: json_value(doc.get(c)) for c in columns} for doc in docs]
    return list(columns), rows
