"""What the three vector backends share: the rows they emit, scores per metric, the link
filter's values, and distributions computed from a sample (vector stores keep no statistics).

Rows are `id`, `score` (similarity intents only), then payload fields. Scores are comparable
across backends for the same metric: cosine similarity, inner product, euclidean distance.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors import embedding
from connectors.base import Column, Distribution, FieldInfo, LinkFilter, Statement
from connectors.errors import QueryFailed
from connectors.types_map import json_safe, json_safe_list
from connectors.vector_query import METRICS, InvalidVectorQuery, VectorQuery, query_vector

SAMPLE_POINTS = 1_000
ID = "id"
SCORE = "score"


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    return metric


def check_dimension(query: VectorQuery, vector: Sequence[float], dimension: int) -> None:
    """A vector whose dimension differs from the collection's is refused before any I/O."""
    if len(vector) != dimension:
        raise InvalidVectorQuery(
            f"the query vector has {len(vector)} dimensions; the collection's have {dimension}",
            f"send a vector of {dimension} numbers",
        )


def check_points(query: VectorQuery, dimension: int) -> None:
    for p in query.points:
        if len(p.vector) != dimension:
            raise InvalidVectorQuery(
                f"point {p.id!r} has a vector of {len(p.vector)} dimensions; "
                f"the collection's have {dimension}",
                "nothing was written",
            )


def link_values(link: LinkFilter) -> list[Any]:
    """The parent's values as plain scalars a vector backend can compare (ints stay ints)."""
    out: list[Any] = []
    for v in link.values:
        if isinstance(v, bool | int | str):
            out.append(v)
        elif isinstance(v, float):
            out.append(int(v) if v.is_integer() else v)
        elif isinstance(v, decimal.Decimal):
            out.append(int(v) if v == v.to_integral_value() else float(v))
        elif isinstance(v, uuid.UUID | dt.date | dt.datetime | dt.time):
            out.append(str(v))
        else:
            out.append(str(v))
    return out


def distributions(table: pa.Table) -> dict[str, Distribution]:
    """Per-column statistics of a sample (Arrow), for the catalog."""
    out: dict[str, Distribution] = {}
    n = table.num_rows
    for name in table.column_names:
        col = table.column(name)
        typ = col.type
        if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_struct(typ):
            out[name] = Distribution(null_fraction=col.null_count / n if n else 0.0)
            continue
        values = col.drop_null()
        try:
            distinct = pc.unique(values)
            n_distinct = len(distinct)
            samples = distinct.slice(0, 5).to_pylist()
        except pa.ArrowNotImplementedError:
            n_distinct, samples = None, []
        lo = hi = None
        if len(values) and (pa.types.is_integer(typ) or pa.types.is_floating(typ)
                            or pa.types.is_string(typ) or pa.types.is_temporal(typ)):  # fmt: skip
            mm = pc.min_max(values)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
        out[name] = Distribution(
            distinct_count=n_distinct,
            null_fraction=col.null_count / n if n else 0.0,
            sample_values=json_safe_list(samples),
            min_value=json_safe(lo),
            max_value=json_safe(hi),
        )
    return out


def vector_field(name: str, dimension: int, metric: str) -> FieldInfo:
    """The vector column as the catalog shows it: its dimension and metric."""
    return FieldInfo(
        name=name,
        data_type=f"FLOAT[{dimension}]",
        nullable=False,
        description=f"vector: dimension {dimension}, metric {metric}",
    )


def score_column() -> Column:
    return Column(SCORE, "DOUBLE")


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def to_json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def link_statement(statement: Statement, link: LinkFilter) -> Statement:
    """The statement with the link attached: each backend ANDs it into its own filter."""
    options = dict(statement.options)
    options["link"] = link
    return dataclasses.replace(statement, options=options)


def collection_of(statement: Statement, database: str) -> str:
    """The collection that runs: the step's `table` (never a name from the body)."""
    name = statement.options.get("collection")
    if not isinstance(name, str) or not name:
        raise QueryFailed(database, "no collection: the step's `table` names it")
    return name


def fetch_limit(query: VectorQuery, statement: Statement) -> int | None:
    """The most rows to fetch: the body's limit, the guardrails' cap + 1, a fetch's ids."""
    limits = [n for n in (query.limit, statement.max_rows) if n]
    if query.intent == "fetch" and query.ids is not None:
        limits.append(len(query.ids))
    return min(limits) if limits else None


async def search_vector(query: VectorQuery) -> tuple[float, ...]:
    """The vector a similarity intent searches with; texts are embedded off the loop."""
    embedded = None
    if query.text is not None:
        embedded = (await embedding.default().embed_async([query.text]))[0]
    return query_vector(query, embedded)


def read_only_refusal(database: str, intent: str) -> QueryFailed:
    return QueryFailed(
        database,
        f"`{intent}` writes; this statement is read-only",
        suggestion="writes need a write grant (W/RW) in the permissions",
    )
