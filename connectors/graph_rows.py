"""Graph query results -> typed rows, shared by the graph connectors (FalkorDB, ladybug).

Scalars become columns of their own type. Nodes, relationships and paths become JSON
objects: `{"id", "labels", "properties"}` for a node, `{"id", "type", "src", "dst",
"properties"}` for a relationship, `{"nodes": [...], "relationships": [...]}` for a path.
JSON rather than STRUCT because the properties of two nodes of one label may differ, and a
STRUCT's fields would have to be fixed by the first batch (a later node with one more property
would change the column's type); DuckDB reads them with `->>` (`n->'properties'->>'name'`).

A column's type is the one all its non-null values share; ints mixed with floats are DOUBLE,
any other mix is JSON, so a column never changes type inside one result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from connectors.arrow_rows import rows_to_arrow, value_type
from connectors.base import Batch, Column, Distribution
from connectors.types_map import json_safe, unique_names

Shape = Callable[[Any], Any]


def column_types(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    types: list[str] = []
    for i in range(width):
        seen: set[str] = set()
        for row in rows:
            v = row[i]
            if v is not None:
                seen.add(value_type(v))
                if len(seen) > 2:
                    break
        if not seen:
            types.append("VARCHAR")
        elif len(seen) == 1:
            types.append(seen.pop())
        elif seen == {"BIGINT", "DOUBLE"}:
            types.append("DOUBLE")
        else:
            types.append("JSON")
    return types


def batches(
    names: Sequence[str],
    rows: list[tuple[Any, ...]],
    *,
    batch_size: int,
    bulk: bool,
) -> list[Batch]:
    """Typed batches of `rows` (already shaped); one empty batch when there are none."""
    types = column_types(rows, len(names))
    columns = [Column(n, t) for n, t in zip(unique_names(names), types, strict=True)]
    json_cols = [i for i, t in enumerate(types) if t == "JSON"]
    if json_cols:
        rows = [_json_fix(r, json_cols) for r in rows]
    out: list[Batch] = []
    for lo in range(0, max(len(rows), 1), batch_size):
        chunk = rows[lo : lo + batch_size]
        if bulk:
            out.append(Batch(columns, arrow=rows_to_arrow(columns, chunk)))
        else:
            out.append(Batch(columns, rows=chunk))
    return out


def _json_fix(row: tuple[Any, ...], cols: list[int]) -> tuple[Any, ...]:
    """A JSON column holds JSON values: a bare string stays a JSON string, not raw text."""
    import json

    out = list(row)
    for i in cols:
        v = out[i]
        if v is not None and not isinstance(v, dict | list):
            out[i] = json.dumps(v, default=str)
    return tuple(out)


def sampled_distribution(values: Sequence[Any]) -> Distribution:
    """A property's statistics over a sample of its values (None for a missing one)."""
    present = [v for v in values if v is not None]
    try:
        low, high = (json_safe(min(present)), json_safe(max(present))) if present else (None, None)
    except TypeError:  # mixed types have no order
        low = high = None
    return Distribution(
        distinct_count=len({repr(v) for v in present}),
        null_fraction=1 - len(present) / len(values) if values else 0.0,
        sample_values=[json_safe(v) for v in present[:5]],
        min_value=low,
        max_value=high,
    )
