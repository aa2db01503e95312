"""Elasticsearch discovery: indices from `_cat/indices` (system and hidden indices skipped),
fields from `_mapping`, distributions from aggregations over a bounded sample.

Column types follow what a read of the index returns (`connectors.es_rows`): `_id`
VARCHAR (the primary key); integral types BIGINT; floating types DOUBLE; `boolean` BOOLEAN;
`object`, `nested`, `flattened`, `geo_*` and ranges JSON; everything else (`keyword`,
`text`, `date` in whatever format the document holds, `ip`) VARCHAR. The mapping's own type
is kept in the field's description. Only top-level fields are columns (a read returns
objects whole, as JSON). Distributions: `cardinality`, `missing`, `min`/`max` and the top
terms of every aggregatable top-level field, over at most SAMPLE_DOCS documents
(`sampler`), one search per index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from connectors.base import Distribution, FieldInfo, Statement, TableInfo
from connectors.types_map import json_safe

if TYPE_CHECKING:
    from connectors.es import ElasticsearchConnector

MAX_INDICES = 500
SAMPLE_DOCS = 10_000
SAMPLE_VALUES = 5
CONCURRENCY = 4

INTEGRAL = frozenset({"long", "integer", "short", "byte", "unsigned_long", "token_count"})
FLOATING = frozenset({"double", "float", "half_float", "scaled_float"})
STRUCTURED = frozenset(
    {
        "object",
        "nested",
        "flattened",
        "geo_point",
        "geo_shape",
        "shape",
        "point",
        "integer_range",
        "long_range",
        "float_range",
        "double_range",
        "date_range",
        "ip_range",
        "dense_vector",
        "knn_vector",
        "join",
    }
)
# types whose `terms`/`min`/`max` aggregations work (doc values)
_AGGREGATABLE = INTEGRAL | FLOATING | frozenset({"keyword", "boolean", "date", "ip"})
_NUMERIC_STATS = INTEGRAL | FLOATING | frozenset({"date"})


def column_type(es_type: str) -> str:
    """The DuckDB type a read returns for a field of this mapping type."""
    if es_type in INTEGRAL:
        return "BIGINT"
    if es_type in FLOATING:
        return "DOUBLE"
    if es_type == "boolean":
        return "BOOLEAN"
    if es_type in STRUCTURED:
        return "JSON"
    return "VARCHAR"


def mapped_fields(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Top-level field -> mapping type, from one index's `mappings` object."""
    props = mapping.get("properties") or {}
    out = {}
    for name, spec in props.items():
        if isinstance(spec, Mapping):
            out[str(name)] = str(
                spec.get("type") or ("object" if "properties" in spec else "object")
            )
    return out


async def index_mapping(
    conn: ElasticsearchConnector, index: str, statement: Statement
) -> dict[str, str]:
    res = await conn.call("GET", f"/{index}/_mapping", statement)
    (body,) = res.values() if len(res) == 1 else (res.get(index, {}),)
    return mapped_fields(body.get("mappings") or {})


async def fields_of(
    conn: ElasticsearchConnector, index: str, statement: Statement
) -> list[FieldInfo]:
    types = await index_mapping(conn, index, statement)
    return [
        FieldInfo("_id", "VARCHAR", nullable=False, is_primary=True, description="_id"),
        *(FieldInfo(n, column_type(t), description=t) for n, t in types.items()),
    ]


async def discover(conn: ElasticsearchConnector, statement: Statement) -> list[TableInfo]:
    cat = await conn.call(
        "GET",
        "/_cat/indices",
        statement,
        params=[("format", "json"), ("h", "index,docs.count,status"), ("expand_wildcards", "open")],
    )
    names = sorted(
        str(row["index"]) for row in cat if not str(row.get("index", ".")).startswith(".")
    )[:MAX_INDICES]
    counts = {str(r["index"]): r.get("docs.count") for r in cat}
    tables: dict[str, TableInfo] = {}
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(name: str) -> None:
        async with limiter:
            fields = await fields_of(conn, name, statement)
            dists = await distributions(conn, name, fields, statement)
            for f in fields:
                f.distribution = dists.get(f.name)
            count = counts.get(name)
            tables[name] = TableInfo(
                name, fields, row_count_estimate=int(count) if count is not None else None
            )

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    return [tables[n] for n in names]


async def distributions(
    conn: ElasticsearchConnector, index: str, fields: list[FieldInfo], statement: Statement
) -> dict[str, Distribution]:
    stats = [f for f in fields if f.description in _AGGREGATABLE]
    if not stats:
        return {}
    aggs: dict[str, Any] = {}
    for i, f in enumerate(stats):
        aggs[f"c{i}"] = {"cardinality": {"field": f.name}}
        aggs[f"n{i}"] = {"missing": {"field": f.name}}
        aggs[f"t{i}"] = {"terms": {"field": f.name, "size": SAMPLE_VALUES}}
        if f.description in _NUMERIC_STATS:
            aggs[f"lo{i}"] = {"min": {"field": f.name}}
            aggs[f"hi{i}"] = {"max": {"field": f.name}}
    body = {"size": 0, "aggs": {"s": {"sampler": {"shard_size": SAMPLE_DOCS}, "aggs": aggs}}}
    res = await conn.call("POST", f"/{index}/_search", statement, body=body)
    sample = (res.get("aggregations") or {}).get("s") or {}
    total = sample.get("doc_count") or 0
    out = {}
    for i, f in enumerate(stats):
        lo = sample.get(f"lo{i}") or {}
        hi = sample.get(f"hi{i}") or {}
        out[f.name] = Distribution(
            distinct_count=(sample.get(f"c{i}") or {}).get("value"),
            null_fraction=((sample.get(f"n{i}") or {}).get("doc_count", 0) / total)
            if total
            else 0.0,
            sample_values=[
                json_safe(b.get("key_as_string", b.get("key")))
                for b in (sample.get(f"t{i}") or {}).get("buckets", [])
            ],
            min_value=json_safe(lo.get("value_as_string", lo.get("value"))),
            max_value=json_safe(hi.get("value_as_string", hi.get("value"))),
        )
    return out
