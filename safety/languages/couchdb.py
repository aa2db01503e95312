"""The `couchdb` language: CouchDB HTTP API bodies with Mango selectors.

The body shape and what runs are in `connectors.couchdb_query` (one validation for both).
This module adds what safety needs: each operation's class, the targets, the bounds, the
fields read, and the GUARDRAILS rewrite.

Levels. Reads (R): find, explain, all_docs, get, view (a view only reads: its JavaScript is
in a design document that an admin wrote). Writes (W): insert, update, delete (one document,
by id and rev), bulk_docs (each document an insert, update or delete). Admin (A): a design
document written by any write (it holds JavaScript that the server runs), a `_local/`
document, create_index, create_database, delete_database.

Always refused: a selector nested deeper than MAX_SELECTOR_DEPTH or with more than
MAX_SELECTOR_NODES values, a `$regex` longer than MAX_REGEX_CHARS or with a nested
quantifier (`(a+)+`: catastrophic backtracking on the server), an operator that is not
Mango's, a `database` other than the step's table, and everything the body validation
refuses (unknown keys, a delete without its rev, an empty bulk_docs...).

GUARDRAILS: `limit` of find/all_docs/view set to at most cap + 1 (the connector pages up to
it and stops at `max_rows`); get and explain return one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from connectors.base import LinkFilter
from connectors.couchdb_query import (
    DESIGN_PREFIX,
    LOCAL_PREFIX,
    documents,
    operation_name,
    problems,
    sort_fields,
    written_ids,
)
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.languages.field_denies import field_block
from safety.text_cache import text_cache
from safety.types import Finding, Operation, TableRef

if TYPE_CHECKING:
    from connectors.base import Connector, Statement
    from safety.verdicts import Block

MAX_SELECTOR_DEPTH = 12
MAX_SELECTOR_NODES = 2_000
MAX_REGEX_CHARS = 256
MAX_IN_VALUES = 10_000  # $in/$nin/$all lists a client writes (link batches are separate)

# Mango's operators (CouchDB 3); anything else starting with `$` is refused by name
MANGO_OPERATORS = frozenset(
    {
        "$and",
        "$or",
        "$nor",
        "$not",
        "$eq",
        "$ne",
        "$lt",
        "$lte",
        "$gt",
        "$gte",
        "$exists",
        "$type",
        "$in",
        "$nin",
        "$size",
        "$mod",
        "$regex",
        "$all",
        "$elemMatch",
        "$allMatch",
        "$keyMapMatch",
        "$beginsWith",
    }
)
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")

_CLASS: dict[str, Operation] = {
    "find": "SELECT",
    "explain": "SELECT",
    "all_docs": "SELECT",
    "get": "SELECT",
    "view": "SELECT",
    "insert": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
    "bulk_docs": "UPDATE",
    "create_index": "DDL",
    "create_database": "DDL",
    "delete_database": "DDL",
}
_STRENGTH = {"SELECT": 0, "INSERT": 1, "UPDATE": 2, "DELETE": 3, "DDL": 4}
ROW_OPERATIONS = frozenset({"find", "all_docs", "view"})

_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class CouchAnalysis:
    body: dict[str, Any] | None
    error: str | None
    suggestion: str | None
    operation: Operation
    op_name: str
    database: str | None  # the body's own `database`, when it names one
    ops: tuple[Operation, ...] = ()  # every class the step's database needs
    structural: tuple[tuple[str, str | None], ...] = ()
    injection_blocks: tuple[tuple[str, str | None], ...] = ()
    injection_warnings: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # top-level fields selected, sorted, returned or written
    returns_all: bool = False  # whole documents (or a view's computed values) come back
    unbounded: bool = False  # never: every write names its documents


@text_cache
def analyse_couchdb(text: str) -> CouchAnalysis:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as err:
        return _failed(
            f"CouchDB body is not valid JSON: {err}",
            'send a JSON object such as {"operation": "find", "selector": {}}',
        )
    if not isinstance(body, dict):
        return _failed(
            "CouchDB body must be a JSON object", 'send {"operation": "find", "selector": {...}}'
        )
    found = problems(body)
    op = operation_name(body)
    if op is None or (found and found[0].startswith("unknown")):
        return _failed(found[0], "see the couchdb language in the README for the body shape")
    structural: list[tuple[str, str | None]] = [(p, None) for p in found]
    blocks: list[tuple[str, str | None]] = []
    for name in ("selector",):
        if isinstance(body.get(name), dict):
            _check_selector(body[name], structural, blocks)
    ops = _classes(op, body)
    operation = max(ops, key=_STRENGTH.__getitem__)
    database = body.get("database")
    return CouchAnalysis(
        body=body,
        error=None,
        suggestion=None,
        operation=operation,
        op_name=op,
        database=database if isinstance(database, str) else None,
        ops=ops,
        structural=tuple(structural),
        injection_blocks=tuple(blocks),
        fields=_fields(op, body),
        returns_all=_returns_all(op, body),
    )


def _failed(error: str, suggestion: str | None) -> CouchAnalysis:
    return CouchAnalysis(
        body=None, error=error, suggestion=suggestion, operation="SELECT", op_name="", database=None
    )


def _classes(op: str, body: dict[str, Any]) -> tuple[Operation, ...]:
    """Every operation class the body needs on the step's database (a bulk_docs of inserts
    and deletes needs INSERT and DELETE; a design document anywhere needs DDL)."""
    if op == "bulk_docs":
        ops: dict[Operation, None] = {}
        for doc in documents(body):
            if doc.get("_deleted") is True:
                ops["DELETE"] = None
            elif "_rev" in doc:
                ops["UPDATE"] = None
            else:
                ops["INSERT"] = None
        found = tuple(ops) or ("UPDATE",)
    else:
        found = (_CLASS[op],)
    if any(i.startswith((DESIGN_PREFIX, LOCAL_PREFIX)) for i in written_ids(body)):
        found = (*found, "DDL")
    return found


def _check_selector(
    selector: dict[str, Any],
    structural: list[tuple[str, str | None]],
    blocks: list[tuple[str, str | None]],
) -> None:
    """Depth, size, operators and regular expressions of a Mango selector."""
    nodes = 0

    def walk(node: Any, depth: int, path: str) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_SELECTOR_NODES:
            structural.append(
                (
                    f"the selector has more than {MAX_SELECTOR_NODES} values; never allowed",
                    "narrow the selector, or link the step to a parent for long key lists",
                )
            )
            return False
        if depth > MAX_SELECTOR_DEPTH:
            structural.append(
                (
                    f"the selector is nested deeper than {MAX_SELECTOR_DEPTH} levels "
                    f"(at {path}); never allowed",
                    "flatten the selector",
                )
            )
            return False
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}"
                if key.startswith("$") and key not in MANGO_OPERATORS:
                    structural.append(
                        (
                            f"unknown selector operator {key} (at {here})",
                            f"use Mango's operators: {', '.join(sorted(MANGO_OPERATORS))}",
                        )
                    )
                    return False
                if key == "$regex" and not _regex_ok(value, here, blocks):
                    return False
                if key in ("$in", "$nin", "$all") and isinstance(value, list):
                    if len(value) > MAX_IN_VALUES:
                        structural.append(
                            (
                                f"{key} (at {here}) lists more than {MAX_IN_VALUES} values",
                                "link the step to a parent instead of listing keys",
                            )
                        )
                        return False
                if not walk(value, depth + 1, here):
                    return False
        elif isinstance(node, list):
            for i, item in enumerate(node):
                if not walk(item, depth + 1, f"{path}[{i}]"):
                    return False
        return True

    walk(selector, 1, "selector")


def _regex_ok(pattern: Any, where: str, blocks: list[tuple[str, str | None]]) -> bool:
    if not isinstance(pattern, str):
        blocks.append((f"$regex (at {where}) must be a string", None))
        return False
    if len(pattern) > MAX_REGEX_CHARS:
        blocks.append(
            (
                f"$regex (at {where}) is {len(pattern)} characters; at most "
                f"{MAX_REGEX_CHARS} are allowed",
                "shorten the pattern, or match with $beginsWith/$eq/$in",
            )
        )
        return False
    if _NESTED_QUANTIFIER.search(pattern):
        blocks.append(
            (
                f"$regex (at {where}) repeats a repeated group (such as (a+)+), which can "
                "backtrack for minutes on the server; never allowed",
                "rewrite the pattern without a quantifier on a quantified group",
            )
        )
        return False
    return True


def _fields(op: str, body: dict[str, Any]) -> tuple[str, ...]:
    """Top-level field names the body selects on, sorts by, returns or writes."""
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

    walk(body.get("selector"))
    for name in body.get("fields") or ():
        if isinstance(name, str):
            found[name.split(".", 1)[0]] = None
    for name in sort_fields(body.get("sort")) or ():
        found[name.split(".", 1)[0]] = None
    for doc in documents(body):
        found.update(dict.fromkeys(doc))
    index = body.get("index")
    if op == "create_index" and isinstance(index, dict):
        for name in index.get("fields") or ():
            key = name if isinstance(name, str) else next(iter(name), "") if name else ""
            found[str(key).split(".", 1)[0]] = None
    for meta in ("_id", "_rev", "_deleted"):
        found.pop(meta, None)
    return tuple(found)


def _returns_all(op: str, body: dict[str, Any]) -> bool:
    if op == "find":
        return not body.get("fields")
    if op == "all_docs":
        return bool(body.get("include_docs"))
    return op in ("get", "view")


@text_cache
def rewrite_couchdb(text: str, cap: int | None) -> str:
    """The body with `limit` at most cap + 1 on find/all_docs/view (as JSON text)."""
    analysis = analyse_couchdb(text)
    body = dict(analysis.body or {})
    if cap is not None and analysis.op_name in ROW_OPERATIONS:
        fetch = cap + 1
        limit = body.get("limit")
        if not isinstance(limit, int) or limit > fetch:
            body["limit"] = fetch
    return msgspec.json.encode(body).decode()


class CouchLanguage(Language):
    """CouchDB HTTP API bodies (the shape in connectors.couchdb_query)."""

    name: ClassVar[str] = "couchdb"
    examples: ClassVar[tuple[str, ...]] = (
        '{"operation": "find", "selector": {"status": "open", "total": {"$gte": 100}}, '
        '"fields": ["_id", "customer_id", "total"], "sort": [{"total": "desc"}], "limit": 50}',
        '{"operation": "view", "ddoc": "stats", "view": "by_country", "group": true}',
        '{"operation": "get", "id": "order:2024-0042"}',
        '{"operation": "update", "document": {"_id": "order:2024-0042", "_rev": "3-9f1c", '
        '"status": "paid"}}',
    )

    def analyse(self, text: str, dialect: str) -> CouchAnalysis:
        return analyse_couchdb(text)

    def declared(self, table: str) -> TableRef:
        return TableRef(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, CouchAnalysis)
        if analysis.error is not None:
            return []
        return [(TableRef(table), op) for op in analysis.ops]

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        return []  # every write names its documents; deleting everything is DDL

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, CouchAnalysis)
        if analysis.database is not None and analysis.database != step.table:
            return (
                f"the body names database {analysis.database!r}, but the step's table is "
                f"{step.table!r}",
                "drop `database` from the body (the step's table is the CouchDB database), "
                "or set the step's table to it",
            )
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, CouchAnalysis)
        return field_block(
            step,
            self.declared(step.table),
            analysis.fields,
            returns_all=analysis.returns_all,
            projection_hint="list the fields you need in `fields` (a find); views and whole "
            "documents cannot hide a field",
        )

    def prompt_text(self, query: str) -> str:
        # a JSON body: its strings are data, judged by the later stages
        return "" if query.lstrip().startswith("{") else query

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, CouchAnalysis)
        # get and explain return one row; writes none
        row_cap = cap if analysis.op_name in ROW_OPERATIONS else None
        # the link goes into the selector of the same request, so `limit` counts linked rows
        return Rewrite(rewrite_couchdb(query, row_cap), row_cap)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        # an empty $in matches nothing: the connector's own link path, with no values
        return connector.with_link(statement, LinkFilter(link_column or "_id", [], "VARCHAR"))
