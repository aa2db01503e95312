"""The `dynamo` language: DynamoDB API requests as `{"verb": "<Operation>", ...}`.

The body shape, the verbs and the tables each names are in `connectors.dynamodb_query` (one
source for safety and the connector; parameters checked against botocore's service model).
This module adds each target's class, the findings and the GUARDRAILS rewrite.

Levels. Reads (R): Query, Scan, GetItem, BatchGetItem, TransactGetItems, DescribeTable,
DescribeTimeToLive, DescribeContinuousBackups, a PartiQL SELECT. Writes (W): PutItem
(INSERT), UpdateItem (UPDATE), DeleteItem (DELETE), BatchWriteItem and TransactWriteItems
(each table with the class of its requests; a ConditionCheck reads), PartiQL INSERT/UPDATE/
DELETE (a PartiQL UPDATE/DELETE without WHERE needs A). Admin (A): CreateTable, DeleteTable,
UpdateTable, UpdateTimeToLive, backups and restores (a restore's target table is written).

What is checked is what runs: `TableName` is omitted (the step's table) or the step's table;
a multi-table verb names the step's table among its tables and every table it names is
checked; a PartiQL statement reads or writes exactly the step's table (an index of it:
`"table"."index"`), checked by the SQL analysis, one statement, no other table.

GUARDRAILS: reads that return items are capped at cap + 1 by the connector's paging
(`Limit`/`ExclusiveStartKey`, `NextToken`) through `max_rows`; the body is not rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from connectors.base import LinkFilter
from connectors.dynamodb_query import (
    MULTI_TABLE,
    partiql_kind,
    problems,
    table_name,
    tables,
)
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.languages.field_denies import field_block
from safety.text_cache import text_cache
from safety.types import Finding, Operation, TableRef

if TYPE_CHECKING:
    from connectors.base import Connector, Statement
    from safety.verdicts import Block

_STRENGTH = {"SELECT": 0, "INSERT": 1, "UPDATE": 2, "DELETE": 3, "DDL": 4}
# reads whose items become rows (the others return one row or nothing)
ROW_VERBS = frozenset({"Query", "Scan", "BatchGetItem", "TransactGetItems"})
MAX_EXPRESSION_CHARS = 4_096  # DynamoDB's own limit on one expression
_IDENT = re.compile(r"(?<![.\w#])#?[A-Za-z_][A-Za-z0-9_]*")
_EXPRESSION_WORDS = frozenset(
    {
        "and",
        "or",
        "not",
        "between",
        "in",
        "attribute_exists",
        "attribute_not_exists",
        "attribute_type",
        "begins_with",
        "contains",
        "size",
        "set",
        "remove",
        "add",
        "delete",
        "if_not_exists",
        "list_append",
    }
)
_EXPRESSIONS = (
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
    "ConditionExpression",
    "UpdateExpression",
)

_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class DynamoAnalysis:
    body: dict[str, Any] | None
    error: str | None
    suggestion: str | None
    operation: Operation
    verb: str
    targets: tuple[tuple[str, Operation], ...] = ()  # (table, class); "" = the step's table
    partiql_tables: tuple[str, ...] = ()  # tables a PartiQL statement names
    structural: tuple[tuple[str, str | None], ...] = ()
    injection_blocks: tuple[tuple[str, str | None], ...] = ()
    injection_warnings: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # attribute names used by expressions, keys and items
    returns_all: bool = False  # whole items come back (no projection)
    unbounded: bool = False  # a PartiQL UPDATE/DELETE without WHERE


@text_cache
def analyse_dynamo(text: str) -> DynamoAnalysis:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as err:
        return _failed(
            f"DynamoDB body is not valid JSON: {err}",
            'send a JSON object such as {"verb": "Scan"}',
        )
    if not isinstance(body, dict):
        return _failed("DynamoDB body must be a JSON object", 'send {"verb": "Query", ...}')
    found = problems(body)
    if found and found[0].startswith("unknown"):
        return _failed(found[0], "see the dynamo language in the README for the body shape")
    verb = body["verb"]
    structural: list[tuple[str, str | None]] = [(p, None) for p in found]
    structural += [
        (f"{name} is over {MAX_EXPRESSION_CHARS} characters", None)
        for name in _EXPRESSIONS
        if isinstance(body.get(name), str) and len(body[name]) > MAX_EXPRESSION_CHARS
    ]
    partiql: tuple[str, ...] = ()
    unbounded = False
    if verb == "ExecuteStatement" and not found:
        sql = _partiql(body["Statement"])
        if sql.error is not None:
            return _failed(f"PartiQL: {sql.error}", sql.suggestion)
        structural += list(sql.structural)
        text = body["Statement"]
        partiql = tuple(dict.fromkeys(_partiql_table(ref, text) for ref, _ in sql.access))
        if len(partiql) > 1:
            structural.append(
                (
                    f"a PartiQL statement works on one table; this one names {', '.join(partiql)}",
                    None,
                )
            )
        targets: tuple[tuple[str, Operation], ...] = tuple(
            (t, sql.operation) for t in partiql or ("",)
        )
        unbounded = sql.unbounded
    else:
        targets = tuple((str(name), op) for name, op in tables(body, ""))  # type: ignore[misc]
    ops = [op for _, op in targets] or ["SELECT"]
    operation: Operation = max(ops, key=_STRENGTH.__getitem__)
    return DynamoAnalysis(
        body=body,
        error=None,
        suggestion=None,
        operation=operation,
        verb=verb,
        targets=targets,
        partiql_tables=partiql,
        structural=tuple(structural),
        fields=_fields(body),
        returns_all=_returns_all(verb, body),
        unbounded=unbounded,
    )


def _failed(error: str, suggestion: str | None) -> DynamoAnalysis:
    return DynamoAnalysis(
        body=None, error=error, suggestion=suggestion, operation="SELECT", verb=""
    )


def _partiql(statement: str) -> Any:
    """PartiQL through the SQL analysis (one statement; its tables and operation)."""
    from safety.languages.sql_analysis import analyse_sql

    return analyse_sql("", statement)  # sqlglot's generic dialect: "quoted" identifiers


_TARGET = re.compile(
    r'\b(?:FROM|INTO|UPDATE)\s+("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_.-]*)', re.IGNORECASE
)


def _partiql_table(ref: Any, statement: str) -> str:
    """The table a PartiQL statement names, spelled as written (DynamoDB table names are
    case-sensitive; the SQL analysis lower-cases). `"table"."index"` reads an index of
    `table`: the table is the target."""
    lowered = ref.schema or ref.name
    for m in _TARGET.finditer(statement):
        raw = m.group(1)
        name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.split(".", 1)[0]
        if name.lower() == lowered:
            return name
    return str(lowered)


def _fields(body: dict[str, Any]) -> tuple[str, ...]:
    """Attribute names the body touches: expression names (placeholders resolved), keys,
    items written, AttributesToGet. An over-approximation: a word in an expression that is
    not a function or keyword counts as an attribute name."""
    names = body.get("ExpressionAttributeNames") or {}
    found: dict[str, None] = {}
    for key in _EXPRESSIONS:
        expr = body.get(key)
        if not isinstance(expr, str):
            continue
        for token in _IDENT.findall(re.sub(r":[A-Za-z0-9_]+", " ", expr)):
            if token.startswith("#"):
                if isinstance(names.get(token), str):
                    found[names[token]] = None
            elif token.lower() not in _EXPRESSION_WORDS:
                found[token] = None
    for key in ("Key", "Item"):
        if isinstance(body.get(key), dict):
            found.update(dict.fromkeys(body[key]))
    for name in body.get("AttributesToGet") or ():
        if isinstance(name, str):
            found[name] = None
    for spec in _nested_specs(body):
        for key in ("Key", "Item"):
            if isinstance(spec.get(key), dict):
                found.update(dict.fromkeys(spec[key]))
        for k in spec.get("Keys") or ():
            if isinstance(k, dict):
                found.update(dict.fromkeys(k))
    return tuple(found)


def _nested_specs(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    items = body.get("RequestItems")
    if isinstance(items, dict):
        for value in items.values():
            if isinstance(value, dict):
                out.append(value)
            elif isinstance(value, list):
                for r in value:
                    if isinstance(r, dict):
                        out.extend(v for v in r.values() if isinstance(v, dict))
    for item in body.get("TransactItems") or ():
        if isinstance(item, dict):
            out.extend(v for v in item.values() if isinstance(v, dict))
    return out


def _returns_all(verb: str, body: dict[str, Any]) -> bool:
    if verb == "ExecuteStatement":
        return partiql_kind(body.get("Statement", "")) == "SELECT" and bool(
            re.match(r"^\s*SELECT\s+\*", body.get("Statement", ""), re.IGNORECASE)
        )
    if verb not in ("Query", "Scan", "GetItem", "BatchGetItem", "TransactGetItems"):
        return False
    if body.get("Select") == "COUNT":
        return False
    if verb in ("BatchGetItem", "TransactGetItems"):
        return any(
            "ProjectionExpression" not in s
            for s in _nested_specs(body)
            if "Keys" in s or "Key" in s
        )
    return "ProjectionExpression" not in body and "AttributesToGet" not in body


def target_problem(analysis: DynamoAnalysis, step_table: str) -> Finding | None:
    """Why the body works on something other than the step's table, or None."""
    body = analysis.body or {}
    verb = analysis.verb
    if verb == "ExecuteStatement":
        named = analysis.partiql_tables
        if named and named != (step_table,):
            return (
                f"the PartiQL statement works on {', '.join(named)}, not on the step's "
                f"table {step_table!r}",
                f"set the step's table to {named[0]!r}, or query {step_table!r}",
            )
        return None
    if verb in MULTI_TABLE:
        names = {t or step_table for t, _ in analysis.targets}
        if step_table not in names:
            return (
                f"{verb} names {', '.join(sorted(names))}, not the step's table {step_table!r}",
                "include the step's table, or set the step's table to one the body names",
            )
        return None
    given = table_name(body.get("TableName"))
    if given is not None and given != step_table:
        return (
            f"the body names TableName {given!r}, but the step's table is {step_table!r}",
            "drop TableName from the body (the step's table is used), or set the step's "
            "table to it",
        )
    return None


class DynamoLanguage(Language):
    """DynamoDB API requests (the shape in connectors.dynamodb_query)."""

    name: ClassVar[str] = "dynamo"
    examples: ClassVar[tuple[str, ...]] = (
        '{"verb": "Query", "KeyConditionExpression": "customer = :c AND created > :t", '
        '"ExpressionAttributeValues": {":c": {"S": "c-17"}, ":t": {"S": "2024-01-01"}}}',
        '{"verb": "GetItem", "Key": {"id": {"S": "order-42"}}}',
        '{"verb": "Scan", "FilterExpression": "#s = :s", "ExpressionAttributeNames": {"#s": '
        '"status"}, "ExpressionAttributeValues": {":s": {"S": "open"}}}',
        '{"verb": "UpdateItem", "Key": {"id": {"S": "order-42"}}, "UpdateExpression": '
        '"SET #s = :s", "ExpressionAttributeNames": {"#s": "status"}, '
        '"ExpressionAttributeValues": {":s": {"S": "paid"}}}',
    )

    def analyse(self, text: str, dialect: str) -> DynamoAnalysis:
        return analyse_dynamo(text)

    def declared(self, table: str) -> TableRef:
        return TableRef(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, DynamoAnalysis)
        if analysis.error is not None:
            return []
        out: dict[tuple[TableRef, Operation], None] = {}
        for name, op in analysis.targets:
            out[(TableRef(name or table), op)] = None
        return list(out)

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, DynamoAnalysis)
        if not analysis.unbounded:
            return []
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE")]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, DynamoAnalysis)
        return target_problem(analysis, step.table)

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, DynamoAnalysis)
        return field_block(
            step,
            self.declared(step.table),
            analysis.fields,
            returns_all=analysis.returns_all,
            projection_hint="name the attributes you need in ProjectionExpression",
        )

    def prompt_text(self, query: str) -> str:
        # a JSON body: its strings are data, judged by the later stages
        return "" if query.lstrip().startswith("{") else query

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, DynamoAnalysis)
        returns_items = analysis.verb in ROW_VERBS or (
            analysis.verb == "ExecuteStatement" and analysis.operation == "SELECT"
        )
        # the connector pages Limit/ExclusiveStartKey (NextToken) to max_rows = cap + 1
        return Rewrite(query, cap if returns_items else None)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        # no link values: the linked path sends no request and yields an empty batch
        return connector.with_link(statement, LinkFilter(link_column or "id", [], "VARCHAR"))
