"""MongoDB discovery: collections, and fields inferred from a bounded sample of documents.

MongoDB keeps no per-field statistics, so each collection is sampled (`$sample` of
`SAMPLE_SIZE` documents; the first `SAMPLE_SIZE` of a plain find when the server lacks
`$sample`). Field types follow `connectors.mongo_flatten` (the same rules as query results);
a field is nullable when some sampled document lacks it or holds null; distributions are
computed within the sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from bson import ObjectId
from pymongo.errors import OperationFailure

from connectors.base import Distribution, FieldInfo, StatSource, TableInfo
from connectors.mongo_flatten import convert_column, jsonable, kind_of, resolve, text
from connectors.types_map import json_safe

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

MAX_COLLECTIONS = 500
SAMPLE_SIZE = 200
SAMPLE_VALUES = 5
FIGURES = ("distinct_count", "null_fraction", "sample_values", "min_value", "max_value")
CONCURRENCY = 8
# types whose values order meaningfully for min/max
_ORDERED = frozenset({"BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMPTZ", "DECIMAL(38,10)", "BOOLEAN"})


async def discover(
    db: AsyncDatabase[dict[str, Any]],
) -> tuple[list[TableInfo], dict[str, frozenset[str]]]:
    """Every collection (up to MAX_COLLECTIONS, by name), and per collection the fields
    whose sampled values are all ObjectIds (for the link filter's ObjectId rule)."""
    names = sorted(n for n in await db.list_collection_names() if not n.startswith("system."))
    names = names[:MAX_COLLECTIONS]
    tables: dict[str, TableInfo] = {}
    oid_fields: dict[str, frozenset[str]] = {}
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(name: str) -> None:
        async with limiter:
            coll = db[name]
            count = await coll.estimated_document_count()
            docs = await sample(db, name)
            tables[name] = TableInfo(
                name,
                infer_fields(docs),
                row_count_estimate=count,
                row_count_source=StatSource("estimated_document_count()", exact=False),
            )
            oid_fields[name] = objectid_fields(docs)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    return [tables[n] for n in names], oid_fields


async def sample(db: AsyncDatabase[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    coll = db[name]
    try:
        cursor = await coll.aggregate([{"$sample": {"size": SAMPLE_SIZE}}])
        return await cursor.to_list(SAMPLE_SIZE)
    except OperationFailure:  # a server without $sample
        return await coll.find({}).limit(SAMPLE_SIZE).to_list(SAMPLE_SIZE)


def objectid_fields(docs: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    seen: dict[str, bool] = {}
    for doc in docs:
        for key, value in doc.items():
            if value is not None:
                seen[key] = seen.get(key, True) and isinstance(value, ObjectId)
    return frozenset(k for k, all_oid in seen.items() if all_oid)


def infer_fields(docs: Sequence[Mapping[str, Any]]) -> list[FieldInfo]:
    """Top-level fields of the sample, in first-seen order (`_id` first when present)."""
    order: dict[str, None] = {}
    for doc in docs:
        order.update(dict.fromkeys(doc))
    names = sorted(order, key=lambda k: k != "_id")  # stable: keeps first-seen order
    return [_field(name, [doc.get(name) for doc in docs]) for name in names]


def _field(name: str, values: list[Any]) -> FieldInfo:
    present = [v for v in values if v is not None]
    typ = resolve({kind_of(v) for v in present})
    as_typed = convert_column(present, typ)
    converted = [v for v in as_typed if v is not None]
    distinct: dict[str, Any] = {}
    for raw, value in zip(present, as_typed, strict=True):
        if value is not None:
            distinct.setdefault(text(raw) if isinstance(raw, dict | list) else repr(value), raw)
    dist = Distribution(
        distinct_count=len(distinct),
        null_fraction=round((len(values) - len(present)) / len(values), 4) if values else None,
        sample_values=[json_safe(jsonable(v)) for v in list(distinct.values())[:SAMPLE_VALUES]],
        # computed within a sample of documents: estimates of the collection
        sources={
            figure: StatSource(
                f"a sample of {len(values)} documents", exact=figure == "sample_values"
            )
            for figure in FIGURES
        },
    )
    if typ in _ORDERED and converted:
        dist.min_value = json_safe(min(converted))
        dist.max_value = json_safe(max(converted))
    return FieldInfo(
        name=name,
        data_type=typ,
        nullable=len(present) < len(values),
        is_primary=name == "_id",
        distribution=dist,
    )
