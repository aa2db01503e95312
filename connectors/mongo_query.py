"""The MQL body of a MongoDB step: parsing, validation, and the link filter.

A body is one JSON object (MongoDB Extended JSON: `{"$oid"}`, `{"$date"}`,
`{"$numberDecimal"}`, `{"$numberLong"}`, `{"$uuid"}`..., relaxed or canonical) naming an
`operation` and its arguments; see `connectors.mongo` for the format. Link values are put
into the parsed document as BSON values and the body is re-serialised as relaxed Extended
JSON, so a value never becomes query syntax and keeps its BSON type ($oid, $date,
$numberDecimal).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import Decimal128, ObjectId, json_util
from bson.binary import UuidRepresentation
from bson.errors import InvalidId
from bson.json_util import RELAXED_JSON_OPTIONS, JSONOptions

from connectors.base import LinkFilter, Statement
from connectors.errors import QueryFailed

READ_OPERATIONS: tuple[str, ...] = ("find", "findOne", "aggregate", "count", "distinct")
WRITE_OPERATIONS: tuple[str, ...] = (
    "insertOne",
    "insertMany",
    "updateOne",
    "updateMany",
    "replaceOne",
    "deleteOne",
    "deleteMany",
)
OPERATIONS = READ_OPERATIONS + WRITE_OPERATIONS
# writes that must name their `filter` ({} means every document): an absent one is a mistake
FILTER_REQUIRED: tuple[str, ...] = (
    "updateOne",
    "updateMany",
    "replaceOne",
    "deleteOne",
    "deleteMany",
)

# keys a body may carry; anything else is a typo we refuse rather than silently ignore
BODY_KEYS: frozenset[str] = frozenset(
    {
        "operation",
        "collection",
        "filter",
        "projection",
        "sort",
        "limit",
        "skip",
        "pipeline",
        "key",
        "maxTimeMS",
        "document",
        "documents",
        "update",
        "upsert",
        "replacement",
        "hint",
        "collation",
        "comment",
        "allowDiskUse",
    }
)
# stages that write; refused on a read-only statement even if a body slipped past the policy
WRITE_STAGES: frozenset[str] = frozenset({"$out", "$merge"})
# stages MongoDB requires to come first; a link's $match goes right after them
FIRST_STAGES: frozenset[str] = frozenset({"$geoNear", "$search", "$searchMeta", "$vectorSearch"})

_JSON_OPTIONS = JSONOptions(
    tz_aware=True, tzinfo=dt.UTC, uuid_representation=UuidRepresentation.STANDARD
)
_DUMP_OPTIONS = RELAXED_JSON_OPTIONS.with_options(uuid_representation=UuidRepresentation.STANDARD)
_HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")


@dataclass(slots=True)
class MongoQuery:
    """A parsed, validated body. `body` keeps every key for re-serialisation."""

    operation: str
    collection: str
    body: dict[str, Any]
    filter: dict[str, Any] = field(default_factory=dict)
    projection: dict[str, Any] | None = None
    sort: list[tuple[str, Any]] | None = None
    limit: int | None = None
    skip: int | None = None
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    key: str | None = None
    max_time_ms: int | None = None

    @property
    def is_write(self) -> bool:
        return self.operation in WRITE_OPERATIONS

    def options(self) -> dict[str, Any]:
        """Driver options passed through as they are (hint, collation, comment...)."""
        return {k: self.body[k] for k in ("hint", "collation", "comment") if k in self.body}


def loads(text: str, database: str) -> dict[str, Any]:
    """Extended JSON text -> a BSON-ready dict; malformed text is a QueryFailed."""
    try:
        body = json_util.loads(text, json_options=_JSON_OPTIONS)
    except (ValueError, TypeError, InvalidId) as exc:
        raise QueryFailed(database, f"the MQL body is not valid (Extended) JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise QueryFailed(database, "the MQL body must be a JSON object with an `operation`")
    return body


def dumps(body: Mapping[str, Any]) -> str:
    """A body as relaxed Extended JSON (readable in the audit log; BSON types survive)."""
    return json_util.dumps(body, json_options=_DUMP_OPTIONS)


def parse(statement: Statement, database: str) -> MongoQuery:
    """Validate a statement's body; the collection comes from `options["collection"]` first."""
    body = loads(statement.text, database)
    op = body.get("operation")
    if op not in OPERATIONS:
        raise QueryFailed(
            database,
            f"unknown MQL operation {op!r}; allowed: {', '.join(OPERATIONS)}",
            suggestion='write e.g. {"operation": "find", "filter": {...}}',
        )
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise QueryFailed(
            database,
            f"unknown key(s) in the MQL body: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(BODY_KEYS))}",
        )
    collection = statement.options.get("collection") or body.get("collection")
    if not isinstance(collection, str) or not collection:
        raise QueryFailed(database, "no collection: set the step's `table` (or `collection`)")
    q = MongoQuery(operation=op, collection=collection, body=body)
    q.filter = _mapping(body, "filter", database) or {}
    q.projection = _mapping(body, "projection", database)
    q.sort = _sort(body.get("sort"), database)
    q.limit = _count(body, "limit", database)
    q.skip = _count(body, "skip", database)
    q.max_time_ms = _count(body, "maxTimeMS", database)
    if op == "aggregate":
        pipeline = body.get("pipeline", [])
        if not isinstance(pipeline, list) or not all(isinstance(s, dict) for s in pipeline):
            raise QueryFailed(database, "`pipeline` must be a list of stage objects")
        q.pipeline = pipeline
    if op == "distinct":
        key = body.get("key")
        if not isinstance(key, str) or not key:
            raise QueryFailed(database, "`distinct` needs a `key` (a field name)")
        q.key = key
    _check_write_args(q, database)
    return q


def write_stages(pipeline: Sequence[Mapping[str, Any]]) -> list[str]:
    return [name for stage in pipeline for name in stage if name in WRITE_STAGES]


def _mapping(body: Mapping[str, Any], key: str, database: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise QueryFailed(database, f"`{key}` must be a JSON object, not {type(value).__name__}")
    return value


def _count(body: Mapping[str, Any], key: str, database: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryFailed(database, f"`{key}` must be a non-negative integer, not {value!r}")
    return int(value)


def _sort(value: Any, database: str) -> list[tuple[str, Any]] | None:
    """`{"a": 1, "b": -1}` or `[["a", 1], ["b", -1]]` -> [("a", 1), ("b", -1)]."""
    if value is None:
        return None
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(
        isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], str) for p in value
    ):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise QueryFailed(
            database, '`sort` must be an object ({"a": 1}) or a list of pairs ([["a", 1]])'
        )
    for name, direction in pairs:
        if direction not in (1, -1) and not isinstance(direction, dict):
            raise QueryFailed(database, f"sort direction of {name!r} must be 1 or -1")
    return pairs or None


def _check_write_args(q: MongoQuery, database: str) -> None:
    body, op = q.body, q.operation
    if op == "insertOne" and not isinstance(body.get("document"), dict):
        raise QueryFailed(database, "`insertOne` needs a `document` object")
    if op == "insertMany":
        docs = body.get("documents")
        if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) for d in docs):
            raise QueryFailed(database, "`insertMany` needs a non-empty `documents` list")
    if op in ("updateOne", "updateMany") and not isinstance(body.get("update"), dict | list):
        raise QueryFailed(database, f"`{op}` needs an `update` (object or pipeline)")
    if op == "replaceOne" and not isinstance(body.get("replacement"), dict):
        raise QueryFailed(database, "`replaceOne` needs a `replacement` object")
    if op in FILTER_REQUIRED and "filter" not in body:
        # an absent filter would touch every document; `{}` says so explicitly
        raise QueryFailed(database, f"`{op}` needs a `filter` (use {{}} to mean all documents)")


# -- link filters -------------------------------------------------------------------------


def link_values(link: LinkFilter, objectid_fields: frozenset[str] = frozenset()) -> list[Any]:
    """Parent values as BSON values for `$in`.

    ObjectId rule (conservative): only for `_id` or a field discovered as ObjectId, and only
    for VARCHAR link values that are 24 hex digits, the ObjectId *and* the original string go
    into `$in`, so the filter matches whichever form the collection stores. Decimals become
    Decimal128, dates midnight UTC datetimes, UUIDs stay UUIDs (binary subtype 4); datetimes
    stay datetimes.
    """
    as_oid = link.type.upper() == "VARCHAR" and (
        link.column == "_id" or link.column in objectid_fields
    )
    out: list[Any] = []
    for value in link.values:
        if value is None:
            continue
        if as_oid and isinstance(value, str) and _HEX24.match(value):
            out.append(ObjectId(value))
            out.append(value)
        elif isinstance(value, decimal.Decimal):
            out.append(Decimal128(value))
        elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            out.append(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC))
        elif isinstance(value, dt.time):
            out.append(value.isoformat())
        elif isinstance(value, bytes | bytearray | memoryview):
            out.append(bytes(value))
        elif isinstance(value, str | int | float | bool | dt.datetime | uuid.UUID | ObjectId):
            out.append(value)
        else:
            out.append(str(value))
    return out


def apply_link(
    statement: Statement,
    link: LinkFilter,
    database: str,
    objectid_fields: frozenset[str] = frozenset(),
) -> Statement:
    """The statement restricted to documents whose `link.column` is one of the values."""
    q = parse(statement, database)
    if q.is_write:
        raise QueryFailed(database, f"a link filter applies to reads, not to `{q.operation}`")
    cond = {link.column: {"$in": link_values(link, objectid_fields)}}
    body = dict(q.body)
    if q.operation == "aggregate":
        pipeline = list(q.pipeline)
        at = 1 if pipeline and next(iter(pipeline[0]), None) in FIRST_STAGES else 0
        pipeline.insert(at, {"$match": cond})
        body["pipeline"] = pipeline
    else:
        body["filter"] = {"$and": [q.filter, cond]} if q.filter else cond
    # every other field carries over (a field added to Statement is never dropped here)
    return dataclasses.replace(statement, text=dumps(body), options=dict(statement.options))
