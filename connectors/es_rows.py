"""Elasticsearch responses -> documents the row shaper turns into typed rows.

Hits: one row per hit, `_id` first, `_score` when the search ranks by score (see
`wants_score`), then the `_source` fields flattened as MongoDB documents are
(`connectors.mongo_flatten`: top-level fields as columns, objects and arrays as JSON, types
fixed by the batch a field first appears in and kept for every later batch).

Aggregations: one row per leaf bucket. Every bucket level contributes its key as a column
named after the aggregation (a `composite` key one column per source, `<agg>.<source>`;
`date_histogram` keys as timestamps), metrics at any level contribute `<agg>` (single value)
or `<agg>.<stat>` columns, a single-bucket aggregation (`filter`, `missing`, `nested`...)
contributes `<agg>.doc_count` and descends, and the leaf bucket's `doc_count` is a column.
Sibling bucket aggregations give their rows one after the other (the other's key is null).
A body whose aggregations hold no bucket aggregation gives one row of its metrics.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

# aggregation types whose bucket keys are epoch milliseconds
_DATE_KEYED = frozenset({"date_histogram", "auto_date_histogram"})
# keys of a bucket (or single-bucket result) that are not sub-aggregations
_BUCKET_META = frozenset(
    {
        "key",
        "key_as_string",
        "doc_count",
        "from",
        "to",
        "from_as_string",
        "to_as_string",
        "doc_count_error_upper_bound",
        "bg_count",
        "score",
    }
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def wants_score(body: Mapping[str, Any]) -> bool:
    """A `_score` column when the hits are ranked by relevance (a query and no sort), sorted on
    `_score`, or `track_scores` asks for it: otherwise every score would be null."""
    if body.get("track_scores"):
        return True
    sort = body.get("sort")
    if sort is None:
        return "query" in body
    items = sort if isinstance(sort, list) else [sort]
    for item in items:
        if item == "_score" or (isinstance(item, Mapping) and "_score" in item):
            return True
    return False


def hit_docs(
    hits: list[dict[str, Any]], score: bool, floats: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Hits as documents; whole numbers in the mapping's floating-point fields as floats."""
    out = []
    for h in hits:
        doc: dict[str, Any] = {"_id": h.get("_id")}
        if score:
            doc["_score"] = h.get("_score")
        src = h.get("_source")
        if src:
            doc.update(src)
            for f in floats:
                v = doc.get(f)
                if type(v) is int:
                    doc[f] = float(v)
        out.append(doc)
    return out


def agg_defs(body: Mapping[str, Any]) -> dict[str, Any]:
    aggs = body.get("aggs", body.get("aggregations"))
    return aggs if isinstance(aggs, dict) else {}


def _kind(definition: Any) -> str | None:
    """The aggregation type of one definition ({"terms": {...}, "aggs": {...}})."""
    if not isinstance(definition, Mapping):
        return None
    for k in definition:
        if k not in ("aggs", "aggregations", "meta"):
            return str(k)
    return None


def _subdefs(definition: Any) -> dict[str, Any]:
    if not isinstance(definition, Mapping):
        return {}
    sub = definition.get("aggs", definition.get("aggregations"))
    return sub if isinstance(sub, dict) else {}


def agg_rows(result: Mapping[str, Any], defs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The response's `aggregations` as rows (see the module docstring)."""
    return _level(result, defs, {}, None)


def _level(
    result: Mapping[str, Any],
    defs: Mapping[str, Any],
    prefix: dict[str, Any],
    doc_count: int | None,
) -> list[dict[str, Any]]:
    row = dict(prefix)
    branches: list[tuple[str, Any, Mapping[str, Any]]] = []
    singles: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = []
    for name, value in result.items():
        if name in _BUCKET_META or not isinstance(value, Mapping):
            continue
        definition = defs.get(name)
        if "buckets" in value:
            branches.append((name, value["buckets"], definition or {}))
        elif "doc_count" in value and _subdefs(definition):
            singles.append((name, value, definition or {}))
        else:
            _metric(row, name, value)
    if doc_count is not None:
        row["doc_count"] = doc_count
    for name, value, definition in singles:
        row[f"{name}.doc_count"] = value["doc_count"]
        sub_rows = _level(value, _subdefs(definition), row, None)
        if len(sub_rows) == 1:
            row = sub_rows[0]
        else:
            branches.append((name, sub_rows, {"__rows__": True}))
    if not branches:
        return [row]
    rows: list[dict[str, Any]] = []
    for name, buckets, definition in branches:
        if isinstance(definition, Mapping) and definition.get("__rows__"):
            rows.extend(buckets)
            continue
        kind = _kind(definition)
        items = buckets.items() if isinstance(buckets, Mapping) else ((None, b) for b in buckets)
        for keyed, bucket in items:
            base = dict(row)
            base.pop("doc_count", None)
            _bucket_key(base, name, kind, keyed, bucket)
            rows.extend(_level(bucket, _subdefs(definition), base, bucket.get("doc_count")))
    return rows


def _bucket_key(
    row: dict[str, Any], name: str, kind: str | None, keyed: str | None, bucket: Mapping[str, Any]
) -> None:
    if keyed is not None:  # `keyed: true` ranges and filters: the dict key is the bucket key
        row[name] = keyed
        return
    key = bucket.get("key")
    if kind == "composite" and isinstance(key, Mapping):
        for source, v in key.items():
            row[f"{name}.{source}"] = v
        return
    if kind in _DATE_KEYED and isinstance(key, int):
        row[name] = _EPOCH + dt.timedelta(milliseconds=key)
        return
    if key is None and "key_as_string" in bucket:
        key = bucket["key_as_string"]
    row[name] = key


def _metric(row: dict[str, Any], name: str, value: Mapping[str, Any]) -> None:
    if set(value) <= {"value", "value_as_string"}:
        row[name] = value.get("value")
        return
    if "values" in value and isinstance(value["values"], Mapping):  # percentiles
        for k, v in value["values"].items():
            row[f"{name}.{k}"] = v
        return
    if "hits" in value:  # top_hits: the documents as JSON
        row[name] = [h.get("_source") for h in value["hits"].get("hits", [])]
        return
    scalars = {k: v for k, v in value.items() if not k.endswith("_as_string")}
    for k, v in scalars.items():
        row[f"{name}.{k}"] = v
