"""The body of a CouchDB step: operations, their keys, validation, and the link filter.

A body is one JSON object naming an `operation` and its arguments. The CouchDB database is
the step's `table` (`Statement.options["collection"]`); a `database` key in the body is only
allowed when it names the same one (the language refuses any other).

    reads:  find     {"selector", "fields", "sort", "limit", "skip", "use_index", "bookmark",
                      "conflicts"}                     -> POST /db/_find
            explain  (the keys of find)                -> POST /db/_explain, one row
            all_docs {"keys", "key", "startkey", "endkey", "include_docs", "descending",
                      "inclusive_end", "limit", "skip"}  -> /db/_all_docs
            get      {"id", "rev"}                     -> GET /db/<id>, zero or one row
            view     {"ddoc", "view", "key", "keys", "startkey", "endkey", "reduce", "group",
                      "group_level", "include_docs", "descending", "inclusive_end", "limit",
                      "skip"}                          -> /db/_design/<ddoc>/_view/<view>
    writes: insert {"document"}, update {"document" with `_id` and `_rev`},
            delete {"id", "rev"}, bulk_docs {"docs"}  -> rows written
    admin:  create_index {"index", "name", "ddoc", "type"}, create_database, delete_database

`_find`, `_explain`, `_all_docs` and `_bulk_docs` are accepted as the HTTP endpoint names of
find, explain, all_docs and bulk_docs.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from connectors.base import LinkFilter, Statement
from connectors.errors import QueryFailed

READ_OPERATIONS: tuple[str, ...] = ("find", "explain", "all_docs", "get", "view")
WRITE_OPERATIONS: tuple[str, ...] = ("insert", "update", "delete", "bulk_docs")
ADMIN_OPERATIONS: tuple[str, ...] = ("create_index", "create_database", "delete_database")
OPERATIONS = READ_OPERATIONS + WRITE_OPERATIONS + ADMIN_OPERATIONS
ALIASES: dict[str, str] = {
    "_find": "find",
    "_explain": "explain",
    "_all_docs": "all_docs",
    "_bulk_docs": "bulk_docs",
}

_FIND_KEYS = frozenset(
    {"selector", "fields", "sort", "limit", "skip", "use_index", "bookmark", "conflicts"}
)
_RANGE_KEYS = frozenset(
    {"key", "keys", "startkey", "endkey", "include_docs", "descending", "inclusive_end"}
)
# keys each operation may carry besides `operation` and `database`; anything else is refused
KEYS: dict[str, frozenset[str]] = {
    "find": _FIND_KEYS,
    "explain": _FIND_KEYS,
    "all_docs": _RANGE_KEYS | {"limit", "skip"},
    "get": frozenset({"id", "rev"}),
    "view": _RANGE_KEYS | {"ddoc", "view", "reduce", "group", "group_level", "limit", "skip"},
    "insert": frozenset({"document"}),
    "update": frozenset({"document"}),
    "delete": frozenset({"id", "rev"}),
    "bulk_docs": frozenset({"docs"}),
    "create_index": frozenset({"index", "name", "ddoc", "type"}),
    "create_database": frozenset(),
    "delete_database": frozenset(),
}
COMMON_KEYS = frozenset({"operation", "database"})

KEYS_OPTION = "couchdb_link_keys"
LINK_COLUMN_OPTION = "couchdb_link_column"
# find keys that order or page the result: a keyed lookup cannot honour them
_ORDERED_KEYS = frozenset({"sort", "skip", "bookmark", "use_index"})

DESIGN_PREFIX = "_design/"
LOCAL_PREFIX = "_local/"

_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class CouchQuery:
    """A parsed, validated body; `body` keeps every key (the language re-serialises it)."""

    operation: str
    database: str
    body: dict[str, Any]

    @property
    def is_read(self) -> bool:
        return self.operation in READ_OPERATIONS


def operation_name(body: Mapping[str, Any]) -> str | None:
    """The canonical operation a body names (aliases resolved), or None."""
    op = body.get("operation")
    if not isinstance(op, str):
        return None
    op = ALIASES.get(op, op)
    return op if op in OPERATIONS else None


def problems(body: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a body's shape, first problem first (empty: runnable).

    The one validation both the language (which refuses with the message) and the
    connector (which never sends an invalid body) apply.
    """
    op = operation_name(body)
    if op is None:
        return [
            f"unknown CouchDB operation {body.get('operation')!r}; use one of "
            f"{', '.join(OPERATIONS)}"
        ]
    unknown = sorted(set(body) - KEYS[op] - COMMON_KEYS)
    if unknown:
        allowed = ", ".join(sorted(KEYS[op] | COMMON_KEYS))
        return [f"unknown key {unknown[0]!r} for CouchDB `{op}`; allowed: {allowed}"]
    out: list[str] = []
    if op in ("find", "explain"):
        if not isinstance(body.get("selector"), dict):
            out.append(f"CouchDB `{op}` needs a `selector` object ({{}} matches every document)")
        if "fields" in body and not _strings(body["fields"]):
            out.append("`fields` must be a list of field names")
        if "sort" in body and sort_fields(body["sort"]) is None:
            out.append('`sort` must be a list of field names or {"field": "asc"|"desc"} objects')
        if "bookmark" in body and not isinstance(body["bookmark"], str):
            out.append("`bookmark` must be a string")
    for name in ("limit", "skip", "group_level"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            out.append(f"`{name}` must be a non-negative integer")
    flags = ("include_docs", "descending", "inclusive_end", "reduce", "group", "conflicts")
    out += [
        f"`{name}` must be true or false"
        for name in flags
        if name in body and not isinstance(body[name], bool)
    ]
    if "keys" in body and not isinstance(body["keys"], list):
        out.append("`keys` must be a list")
    if op == "get" or op == "delete":
        if not _nonempty(body.get("id")):
            out.append(f"CouchDB `{op}` needs an `id` (a document id)")
        if op == "delete" and not _nonempty(body.get("rev")):
            out.append("CouchDB `delete` needs the document's current `rev`")
    if op == "view":
        out += [
            f"CouchDB `view` needs `{name}` (a name)"
            for name in ("ddoc", "view")
            if not _nonempty(body.get(name))
        ]
    if op in ("insert", "update"):
        doc = body.get("document")
        if not isinstance(doc, dict):
            out.append(f"CouchDB `{op}` needs a `document` object")
        elif op == "update" and not (_nonempty(doc.get("_id")) and _nonempty(doc.get("_rev"))):
            out.append("CouchDB `update` needs the document's `_id` and current `_rev`")
        elif op == "insert" and "_rev" in doc:
            out.append("an inserted document has no `_rev`; use `update` to change a document")
    if op == "bulk_docs":
        docs = body.get("docs")
        if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) for d in docs):
            out.append("CouchDB `bulk_docs` needs a non-empty `docs` list of objects")
        else:
            for i, doc in enumerate(docs):
                if doc.get("_deleted") is True and not (
                    _nonempty(doc.get("_id")) and _nonempty(doc.get("_rev"))
                ):
                    out.append(f"docs[{i}] deletes without its `_id` and `_rev`")
    if op == "create_index" and not isinstance(body.get("index"), dict):
        out.append('CouchDB `create_index` needs an `index` object ({"fields": [...]})')
    for doc in documents(body):
        doc_id = doc.get("_id")
        if doc_id is not None and not isinstance(doc_id, str):
            out.append("a document `_id` must be a string")
        elif (
            isinstance(doc_id, str)
            and doc_id.startswith("_")
            and not doc_id.startswith((DESIGN_PREFIX, LOCAL_PREFIX))
        ):
            out.append(f"document id {doc_id!r}: ids starting with `_` are reserved")
    return out


def documents(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The documents a write body sends (insert/update document, bulk_docs docs)."""
    op = operation_name(body)
    if op in ("insert", "update") and isinstance(body.get("document"), dict):
        return [body["document"]]
    if op == "bulk_docs" and isinstance(body.get("docs"), list):
        return [d for d in body["docs"] if isinstance(d, dict)]
    return []


def written_ids(body: Mapping[str, Any]) -> list[str]:
    """Document ids a write touches (delete's `id` included)."""
    ids = [d["_id"] for d in documents(body) if isinstance(d.get("_id"), str)]
    if operation_name(body) == "delete" and isinstance(body.get("id"), str):
        ids.append(body["id"])
    return ids


def sort_fields(sort: Any) -> list[str] | None:
    """Field names of a Mango `sort` (["a", {"b": "desc"}]); None when malformed."""
    if not isinstance(sort, list):
        return None
    out: list[str] = []
    for item in sort:
        if isinstance(item, str):
            out.append(item)
        elif (
            isinstance(item, dict)
            and len(item) == 1
            and next(iter(item.values())) in ("asc", "desc")
        ):
            out.append(str(next(iter(item))))
        else:
            return None
    return out


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def loads(text: str, database: str) -> dict[str, Any]:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise QueryFailed(database, f"the CouchDB body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise QueryFailed(database, "the CouchDB body must be a JSON object with an `operation`")
    return body


def parse(statement: Statement, database: str) -> CouchQuery:
    """Validate a statement's body; the CouchDB database is `options["collection"]`."""
    body = loads(statement.text, database)
    found = problems(body)
    if found:
        raise QueryFailed(database, found[0])
    target = statement.options.get("collection") or body.get("database")
    if not isinstance(target, str) or not target:
        raise QueryFailed(database, "no CouchDB database: set the step's `table`")
    op = operation_name(body)
    assert op is not None  # problems() checked it
    return CouchQuery(operation=op, database=target, body=body)


# -- link filters -------------------------------------------------------------------------


def link_value(value: Any) -> Any:
    """A parent value as the JSON value CouchDB compares (documents hold JSON only)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def apply_link(statement: Statement, link: LinkFilter, database: str) -> Statement:
    """The find restricted to documents whose `link.column` is one of the values:
    `{"$and": [<selector>, {column: {"$in": values}}]}` (the original selector kept)."""
    q = parse(statement, database)
    if q.operation != "find":
        raise QueryFailed(
            database,
            f"a linked CouchDB step must be a `find`, not `{q.operation}`",
            suggestion='write the child as {"operation": "find", "selector": {...}}',
        )
    values = [link_value(v) for v in link.values if v is not None]
    if link.column == "_id":
        values = [v if isinstance(v, str) else msgspec.json.encode(v).decode() for v in values]
    values = list(dict.fromkeys(values))
    cond = {link.column: {"$in": values}}
    selector = q.body.get("selector") or {}
    body = dict(q.body)
    body["selector"] = {"$and": [selector, cond]} if selector else cond
    options = dict(statement.options)
    options[LINK_COLUMN_OPTION] = link.column
    if link.column == "_id" and not selector and not set(q.body) & _ORDERED_KEYS:
        # every document with one of these ids: _all_docs by keys is a lookup per key, where
        # _find would scan (the text above still says what runs, for the audit log)
        options[KEYS_OPTION] = values
    return Statement(
        text=msgspec.json.encode(body).decode(),
        params=statement.params,
        timeout=statement.timeout,
        readonly=statement.readonly,
        max_rows=statement.max_rows,
        batch_size=statement.batch_size,
        bulk=statement.bulk,
        options=options,
    )
