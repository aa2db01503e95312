"""MQL bodies: a JSON object parsed once per text, its operation class, the collections it
reads, what is dangerous in it, and the guardrails rewrite.

Body shape (what the MongoDB connector runs): {"operation": "find" | "findOne" | "aggregate"
| "count" | "distinct" | "insertOne" | "insertMany" | "updateOne" | "updateMany" |
"replaceOne" | "deleteOne" | "deleteMany", "filter", "projection", "sort", "limit", "skip",
"pipeline", "key", "document", "documents", "update", "replacement", "collection"
(optional; must equal the step's table), "maxTimeMS"}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from connectors.base import LinkFilter
from connectors.mongo_query import BODY_KEYS, FILTER_REQUIRED, READ_OPERATIONS, WRITE_OPERATIONS
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.text_cache import text_cache
from safety.types import Finding, Operation, TableRef
from safety.verdicts import Block

if TYPE_CHECKING:
    from connectors.base import Connector, Statement

# The connector's lists are the one source of truth for what a body may say; safety only adds
# each operation's class (checked at import so a new connector operation cannot go unclassified).
_CLASS: dict[str, Operation] = {
    "find": "SELECT",
    "findOne": "SELECT",
    "aggregate": "SELECT",
    "count": "SELECT",
    "distinct": "SELECT",
    "insertOne": "INSERT",
    "insertMany": "INSERT",
    "updateOne": "UPDATE",
    "updateMany": "UPDATE",
    "replaceOne": "UPDATE",
    "deleteOne": "DELETE",
    "deleteMany": "DELETE",
}
if set(_CLASS) != set(READ_OPERATIONS + WRITE_OPERATIONS) or any(
    _CLASS[op] != "SELECT" for op in READ_OPERATIONS
):
    raise ImportError("the MQL operation classes disagree with connectors.mongo_query")
OPERATIONS: dict[str, Operation] = {op: _CLASS[op] for op in READ_OPERATIONS + WRITE_OPERATIONS}
KEYS: frozenset[str] = BODY_KEYS
# Server-side JavaScript and writes from inside a read: refused wherever they appear.
BLOCKED_OPERATORS = frozenset(
    {"$where", "$function", "$accumulator", "$out", "$merge", "$code", "$eval"}
)
# Stages that expose other sessions, server state or other databases.
ADMIN_STAGES = frozenset(
    {
        "$currentOp",
        "$listSessions",
        "$listLocalSessions",
        "$collStats",
        "$indexStats",
        "$planCacheStats",
        "$changeStream",
        "$listSearchIndexes",
        "$listSampledQueries",
        "$documents",
        "$shardedDataDistribution",
        "$querySettings",
    }
)
_JS = re.compile(r"\bfunction\s*\(|=>")

_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class MqlAnalysis:
    body: dict[str, Any] | None
    error: str | None
    suggestion: str | None
    operation: Operation
    op_name: str
    collection: str | None  # the body's own "collection", when it names one
    lookups: tuple[str, ...]  # collections read through $lookup/$graphLookup/$unionWith
    unbounded: bool  # updateMany/deleteMany with an empty filter
    structural: tuple[tuple[str, str | None], ...]
    injection_blocks: tuple[tuple[str, str | None], ...]
    fields: tuple[str, ...] = ()  # top-level field names read, filtered, sorted or written
    excluded: frozenset[str] = frozenset()  # fields a find projection excludes
    returns_all: bool = False  # whole documents come back (no inclusion projection)
    injection_warnings: tuple[str, ...] = ()  # MQL findings always block


@text_cache
def analyse_mql(text: str) -> MqlAnalysis:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as err:
        return _failed(
            f"MQL body is not valid JSON: {err}",
            'send a JSON object such as {"operation": "find", "filter": {}}',
        )
    if not isinstance(body, dict):
        return _failed(
            "MQL body must be a JSON object", 'send {"operation": "find", "filter": {...}}'
        )
    op_name = body.get("operation")
    if op_name not in OPERATIONS:
        return _failed(f"unknown MQL operation {op_name!r}", f"use one of {', '.join(OPERATIONS)}")
    unknown = sorted(set(body) - KEYS)
    if unknown:
        return _failed(
            f"unknown MQL body key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(KEYS))}"
        )
    structural: list[tuple[str, str | None]] = []
    blocks: list[tuple[str, str | None]] = []
    lookups: list[str] = []
    structural += [
        (f"MQL `{name}` must be an object", None)
        for name in ("filter", "projection", "replacement", "document")
        if name in body and not isinstance(body[name], dict)
    ]
    if op_name in FILTER_REQUIRED and "filter" not in body:
        structural.append(
            (
                f"MQL `{op_name}` needs a `filter`",
                "use {} to mean every document (that needs the A level)",
            )
        )
    if "sort" in body and sort_spec(body["sort"]) is None:
        structural.append(
            (
                "MQL `sort` must be an object or a list of [field, direction] "
                'pairs, e.g. {"a": 1} or [["a", 1]]',
                None,
            )
        )
    if "update" in body and not isinstance(body["update"], dict | list):
        structural.append(("MQL `update` must be an object or a pipeline list", None))
    for name in ("pipeline", "documents"):
        if name in body and not isinstance(body[name], list):
            structural.append((f"MQL `{name}` must be a list", None))
    for name in ("limit", "skip", "maxTimeMS"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            structural.append((f"MQL `{name}` must be a non-negative integer", None))
    for name in ("pipeline", "update"):
        if isinstance(body.get(name), list) and not all(
            isinstance(stage, dict) and len(stage) == 1 for stage in body[name]
        ):
            structural.append((f"each stage of `{name}` must be an object with one operator", None))
    _walk(body, blocks, structural, lookups, path="$")
    collection = body.get("collection")
    filter_ = body.get("filter")
    unbounded = op_name in ("updateMany", "deleteMany") and not filter_
    fields, excluded, returns_all = _fields(body, op_name)
    return MqlAnalysis(
        fields=fields,
        excluded=excluded,
        returns_all=returns_all,
        body=body,
        error=None,
        suggestion=None,
        operation=OPERATIONS[op_name],
        op_name=op_name,
        collection=collection if isinstance(collection, str) else None,
        lookups=tuple(dict.fromkeys(lookups)),
        unbounded=unbounded,
        structural=tuple(structural),
        injection_blocks=tuple(blocks),
    )


def sort_spec(sort: Any) -> dict[str, Any] | None:
    """`sort` as an object: `{"a": 1}` as is, `[["a", 1], ...]` (the connector accepts both)
    converted, so field checks see every sort field; None when it is neither."""
    if isinstance(sort, dict):
        return sort
    if isinstance(sort, list) and all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in sort
    ):
        return dict(sort)
    return None


def _fields(body: dict[str, Any], op_name: str) -> tuple[tuple[str, ...], frozenset[str], bool]:
    """Field names the body touches (over-approximated: any non-operator key or `$path`)."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and not key.startswith("$"):
                    found[key.split(".", 1)[0]] = None
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node.startswith("$") and not node.startswith("$$"):
            found[node[1:].split(".", 1)[0]] = None

    for name in ("filter", "pipeline", "update", "replacement", "document", "documents"):
        walk(body.get(name))
    walk(sort_spec(body.get("sort")))  # the list form names its fields in values, not keys
    if isinstance(body.get("key"), str):
        found[body["key"].split(".", 1)[0]] = None
    projection = body.get("projection")
    excluded: set[str] = set()
    returns_all = False
    if op_name in ("find", "findOne"):
        included = []
        if isinstance(projection, dict):
            for key, value in projection.items():
                name = str(key).split(".", 1)[0]
                if value in (0, False):
                    excluded.add(name)
                else:
                    included.append(name)
        found.update(dict.fromkeys(included))
        returns_all = not included
    elif op_name == "aggregate":
        stages = body.get("pipeline") or []
        shaping = ("$project", "$group", "$count", "$replaceRoot", "$replaceWith")
        returns_all = not any(
            isinstance(st, dict) and any(k in st for k in shaping) for st in stages
        )
    found.pop("_id", None)
    return tuple(found), frozenset(excluded), returns_all


def _failed(error: str, suggestion: str | None) -> MqlAnalysis:
    return MqlAnalysis(
        body=None,
        error=error,
        suggestion=suggestion,
        operation="SELECT",
        op_name="",
        collection=None,
        lookups=(),
        unbounded=False,
        structural=(),
        injection_blocks=(),
    )


def _walk(
    node: Any,
    blocks: list[tuple[str, str | None]],
    structural: list[tuple[str, str | None]],
    lookups: list[str],
    path: str,
) -> None:
    """Find blocked operators, JavaScript, admin stages and lookup targets at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in BLOCKED_OPERATORS:
                blocks.append(
                    (
                        f"MQL operator {key} (at {here}) runs server-side JavaScript or "
                        "writes to another collection; never allowed",
                        "express the filter or stage with query operators",
                    )
                )
            elif key in ADMIN_STAGES:
                structural.append(
                    (
                        f"aggregation stage {key} (at {here}) reads server state; "
                        "never allowed through sluice",
                        None,
                    )
                )
            elif key in ("$lookup", "$graphLookup") and isinstance(value, dict):
                if isinstance(value.get("from"), str):
                    lookups.append(value["from"])
                elif "from" in value:
                    structural.append((f"{key}.from (at {here}) must name a collection", None))
            elif key == "$unionWith":
                if isinstance(value, str):
                    lookups.append(value)
                elif isinstance(value, dict) and isinstance(value.get("coll"), str):
                    lookups.append(value["coll"])
                else:
                    structural.append((f"$unionWith (at {here}) must name a collection", None))
            _walk(value, blocks, structural, lookups, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, blocks, structural, lookups, f"{path}[{i}]")
    elif isinstance(node, str) and _JS.search(node):
        blocks.append(
            (
                f"JavaScript in an MQL string (at {path}); never allowed",
                "express it with query operators",
            )
        )


@text_cache
def rewrite_mql(text: str, cap: int | None, max_time_ms: int) -> str:
    """The body with its row cap (cap + 1 fetched) and maxTimeMS set, as JSON text."""
    analysis = analyse_mql(text)
    body = dict(analysis.body or {})
    fetch = None if cap is None else cap + 1
    if fetch is not None and analysis.op_name == "find":
        limit = body.get("limit")
        if not limit or limit > fetch:  # 0 means "no limit" in MongoDB
            body["limit"] = fetch
    elif fetch is not None and analysis.op_name == "aggregate":
        pipeline = list(body.get("pipeline") or [])
        last = pipeline[-1] if pipeline else None
        if isinstance(last, dict) and isinstance(last.get("$limit"), int):
            if last["$limit"] > fetch:
                pipeline[-1] = {"$limit": fetch}
        else:
            pipeline.append({"$limit": fetch})
        body["pipeline"] = pipeline
    body["maxTimeMS"] = max_time_ms
    return msgspec.json.encode(body).decode()


_ROW_OPS = frozenset({"find", "aggregate"})


class MqlLanguage(Language):
    """MongoDB query bodies (the JSON shape in the module docstring)."""

    name: ClassVar[str] = "mql"
    examples: ClassVar[tuple[str, ...]] = (
        '{"operation": "find", "filter": {"status": "paid"}, "projection": {"_id": 0, "id": 1, '
        '"total": 1}, "sort": [["total", -1]], "limit": 20}',
        '{"operation": "aggregate", "pipeline": [{"$match": {"status": "paid"}}, {"$group": '
        '{"_id": "$customer", "n": {"$sum": 1}}}]}',
        '{"operation": "count", "filter": {"status": "paid"}}',
        '{"operation": "updateOne", "filter": {"id": 42}, "update": {"$set": {"status": '
        '"shipped"}}}',
    )

    def analyse(self, text: str, dialect: str) -> MqlAnalysis:
        return analyse_mql(text)

    def declared(self, table: str) -> TableRef:
        return TableRef(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, MqlAnalysis)
        if analysis.error is not None:
            return []
        out: list[tuple[TableRef, Operation]] = [(TableRef(table), analysis.operation)]
        out += [(TableRef(name), "SELECT") for name in analysis.lookups]
        return out

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        # only the step's own collection is written; $lookup targets are read
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE") and ref == declared]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, MqlAnalysis)
        if analysis.collection is not None and analysis.collection != step.table:
            return (
                f"the body names collection {analysis.collection!r}, but the step's "
                f"table is {step.table!r}",
                "set the step's table to the collection the body queries, or "
                "drop `collection` from the body",
            )
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, MqlAnalysis)
        grant = step.grant(self.declared(step.table))
        denied = grant.deny_columns
        if not denied:
            return None
        where = f"{step.database}.{step.table}"
        for field in analysis.fields:
            if field.lower() in denied:
                return Block(
                    f"Access denied: field {where}.{field} is denied; policy "
                    f"{grant.entry}.deny_columns",
                    f"remove {field} from the body, or from {grant.entry}.deny_columns",
                    f"{grant.entry}.deny_columns",
                )
        hidden = {f.lower() for f in analysis.excluded}
        if analysis.returns_all and not denied <= hidden:
            return Block(
                f"Access denied: whole documents of {where} would return denied fields "
                f"({', '.join(sorted(denied))})",
                "list the fields you need in `projection` (or a $project stage), or exclude "
                "the denied ones",
                f"{grant.entry}.deny_columns",
            )
        return None

    def prompt_text(self, query: str) -> str:
        # a JSON body: its strings are data, judged by the later stages
        return "" if query.lstrip().startswith("{") else query

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, MqlAnalysis)
        row_cap = cap if analysis.op_name in _ROW_OPS else None
        # the link's $match goes first in the body, so it filters before the cap
        return Rewrite(rewrite_mql(query, row_cap, max(1, int(timeout * 1000))), row_cap)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        # an empty link matches nothing: the connector's own filter, with no values
        return connector.with_link(statement, LinkFilter(link_column or "_id", [], "VARCHAR"))
