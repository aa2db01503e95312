"""The body of a DynamoDB step: verbs, the tables each names, validation, and link filters.

A body is `{"verb": "<Operation>", ...the operation's own parameters...}` with typed
attribute values (`{":v": {"S": "x"}}`), exactly as the DynamoDB API takes them. The
parameters a verb accepts come from botocore's service model (the same one the client
validates against), so a misspelt or unknown parameter is refused by name before anything is
sent. `TableName` may be omitted (the step's table is used) or must equal it.

Tables each verb names (every one is a target the policy checks): `TableName`; the keys of
`RequestItems` (BatchGetItem, BatchWriteItem); each `TransactItems[*].<Get|Put|Update|Delete|
ConditionCheck>.TableName`; `TargetTableName` of a restore; the table a PartiQL statement
names (ExecuteStatement).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from connectors.base import LinkFilter, Statement
from connectors.errors import QueryFailed

# verb -> operation class (SELECT / INSERT / UPDATE / DELETE / DDL); ExecuteStatement is
# classified from its PartiQL and TransactWriteItems/BatchWriteItem per item
READ_VERBS: tuple[str, ...] = (
    "Query",
    "Scan",
    "GetItem",
    "BatchGetItem",
    "TransactGetItems",
    "DescribeTable",
    "DescribeTimeToLive",
    "DescribeContinuousBackups",
)
WRITE_VERBS: tuple[str, ...] = (
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
)
ADMIN_VERBS: tuple[str, ...] = (
    "CreateTable",
    "DeleteTable",
    "UpdateTable",
    "UpdateTimeToLive",
    "CreateBackup",
    "DeleteBackup",
    "RestoreTableFromBackup",
    "UpdateContinuousBackups",
)
VERBS: tuple[str, ...] = (*READ_VERBS, *WRITE_VERBS, *ADMIN_VERBS, "ExecuteStatement")
# verbs whose tables come from the body, not from one TableName
MULTI_TABLE = frozenset(
    {"BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems"}
)
# verbs that take no TableName (a backup is named by its ARN): the step's table is the target
NO_TABLE = frozenset({"DeleteBackup", "RestoreTableFromBackup", "ExecuteStatement"})

TRANSACT_WRITE_OPS: dict[str, str] = {
    "Put": "INSERT",
    "Update": "UPDATE",
    "Delete": "DELETE",
    "ConditionCheck": "SELECT",
}
MAX_BATCH_GET_KEYS = 100  # the service's limit for one BatchGetItem call
MAX_IN_OPERANDS = 100  # the service's limit for one IN (...) in an expression

_ARN_TABLE = re.compile(r"^arn:[^:]+:dynamodb:[^:]*:[^:]*:table/([^/]+)$")
_DECODER = msgspec.json.Decoder()


@functools.cache
def _service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("dynamodb")


@functools.cache
def parameters(verb: str) -> frozenset[str]:
    """The request parameters a verb accepts (botocore's service model)."""
    shape = _service_model().operation_model(verb).input_shape
    return frozenset(shape.members) if shape is not None else frozenset()


def table_name(name: Any) -> Any:
    """A table name or table ARN as the table's name (other values unchanged)."""
    if isinstance(name, str) and (m := _ARN_TABLE.match(name)):
        return m.group(1)
    return name


@dataclass(frozen=True, slots=True)
class DynamoRequest:
    """A validated body: its verb and the API parameters to send (TableName filled in)."""

    verb: str
    params: dict[str, Any]

    @property
    def is_read(self) -> bool:
        if self.verb == "ExecuteStatement":
            return partiql_kind(self.params.get("Statement", "")) == "SELECT"
        return self.verb in READ_VERBS


def problems(body: Mapping[str, Any]) -> list[str]:
    """What is wrong with a body's shape, first problem first (empty: runnable)."""
    verb = body.get("verb")
    if verb not in VERBS:
        return [f"unknown DynamoDB verb {verb!r}; use one of {', '.join(VERBS)}"]
    allowed = parameters(verb)
    unknown = sorted(set(body) - allowed - {"verb"})
    if unknown:
        return [
            f"unknown parameter {unknown[0]!r} for DynamoDB {verb}; allowed: "
            f"{', '.join(sorted(allowed))}"
        ]
    out: list[str] = []
    if verb in ("BatchGetItem", "BatchWriteItem"):
        items = body.get("RequestItems")
        if not isinstance(items, dict) or not items:
            out.append(f"DynamoDB {verb} needs `RequestItems`, an object keyed by table name")
        elif verb == "BatchWriteItem":
            for table, requests in items.items():
                if not isinstance(requests, list) or not requests:
                    out.append(f"RequestItems[{table!r}] must be a non-empty list of requests")
                    continue
                for r in requests:
                    if (
                        not isinstance(r, dict)
                        or len(r) != 1
                        or not (set(r) <= {"PutRequest", "DeleteRequest"})
                    ):
                        out.append(
                            f"RequestItems[{table!r}]: each request is one PutRequest or "
                            "DeleteRequest"
                        )
                        break
                    if "DeleteRequest" in r and not _key_given(r["DeleteRequest"]):
                        out.append(f"RequestItems[{table!r}]: a DeleteRequest needs its `Key`")
                        break
    if verb in ("TransactGetItems", "TransactWriteItems"):
        items = body.get("TransactItems")
        kinds = {"Get"} if verb == "TransactGetItems" else set(TRANSACT_WRITE_OPS)
        if not isinstance(items, list) or not items:
            out.append(f"DynamoDB {verb} needs a non-empty `TransactItems` list")
        else:
            for i, item in enumerate(items):
                if not isinstance(item, dict) or len(item) != 1 or not set(item) <= kinds:
                    out.append(f"TransactItems[{i}] must be one of {', '.join(sorted(kinds))}")
                    break
                ((kind, spec),) = item.items()
                if not isinstance(spec, dict):
                    out.append(f"TransactItems[{i}].{kind} must be an object")
                    break
                if kind in ("Delete", "Update", "Get", "ConditionCheck") and not _key_given(spec):
                    out.append(f"TransactItems[{i}].{kind} needs its `Key`")
                    break
    if verb in ("GetItem", "DeleteItem", "UpdateItem") and not _key_given(body):
        out.append(f"DynamoDB {verb} needs the item's `Key`")
    if verb == "PutItem" and not isinstance(body.get("Item"), dict):
        out.append("DynamoDB PutItem needs an `Item`")
    if verb == "ExecuteStatement":
        text = body.get("Statement")
        if not isinstance(text, str) or not text.strip():
            out.append("DynamoDB ExecuteStatement needs a PartiQL `Statement`")
        elif partiql_kind(text) is None:
            out.append("a PartiQL statement must be one SELECT, INSERT, UPDATE or DELETE")
        if "Parameters" in body and not isinstance(body["Parameters"], list):
            out.append("`Parameters` must be a list of typed values")
    limit = body.get("Limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        out.append("`Limit` must be a positive integer")
    return out


def _key_given(spec: Mapping[str, Any]) -> bool:
    key = spec.get("Key")
    return isinstance(key, dict) and bool(key)


def tables(body: Mapping[str, Any], step_table: str) -> list[tuple[str, str]]:
    """(table, operation class) for every table the body names; the step's table stands in
    where the verb names none (TableName omitted)."""
    verb = body.get("verb")
    if verb in ("BatchGetItem", "BatchWriteItem"):
        items = body.get("RequestItems") or {}
        out: list[tuple[str, str]] = []
        for name, value in items.items() if isinstance(items, dict) else ():
            if verb == "BatchGetItem":
                out.append((table_name(name), "SELECT"))
                continue
            ops = {next(iter(r)) for r in value if isinstance(r, dict) and r}
            if "PutRequest" in ops:
                out.append((table_name(name), "INSERT"))
            if "DeleteRequest" in ops:
                out.append((table_name(name), "DELETE"))
        return out
    if verb in ("TransactGetItems", "TransactWriteItems"):
        out = []
        for item in body.get("TransactItems") or ():
            if not isinstance(item, dict) or len(item) != 1:
                continue
            ((kind, spec),) = item.items()
            name = spec.get("TableName", step_table) if isinstance(spec, dict) else step_table
            op = "SELECT" if kind == "Get" else TRANSACT_WRITE_OPS.get(kind, "UPDATE")
            out.append((table_name(name), op))
        return out
    name = table_name(body.get("TableName", step_table))
    if verb == "RestoreTableFromBackup":
        name = body.get("TargetTableName", step_table)
    return [(name, verb_operation(str(verb)))]


def verb_operation(verb: str) -> str:
    if verb in READ_VERBS:
        return "SELECT"
    if verb in ADMIN_VERBS:
        return "DDL"
    return {"PutItem": "INSERT", "UpdateItem": "UPDATE", "DeleteItem": "DELETE"}.get(verb, "UPDATE")


_PARTIQL_KIND = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|EXISTS)\b", re.IGNORECASE)


def partiql_kind(text: str) -> str | None:
    m = _PARTIQL_KIND.match(text or "")
    if not m or m.group(1).upper() == "EXISTS":
        return None
    return m.group(1).upper()


def loads(text: str, database: str) -> dict[str, Any]:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise QueryFailed(database, f"the DynamoDB body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise QueryFailed(database, 'the DynamoDB body must be a JSON object with a "verb"')
    return body


def parse(statement: Statement, database: str) -> DynamoRequest:
    """A validated request; the step's table (`options["collection"]`) fills `TableName`."""
    body = loads(statement.text, database)
    found = problems(body)
    if found:
        raise QueryFailed(database, found[0])
    verb = body["verb"]
    params = {k: v for k, v in body.items() if k != "verb"}
    step_table = statement.options.get("collection")
    if verb not in MULTI_TABLE and verb not in NO_TABLE and "TableName" in parameters(verb):
        given = table_name(params.get("TableName"))
        if given is not None and step_table and given != step_table:
            # the language refuses this; the connector never runs another table either
            raise QueryFailed(
                database, f"TableName {given!r} is not the step's table {step_table!r}"
            )
        params["TableName"] = step_table or given
        if not params["TableName"]:
            raise QueryFailed(database, "no table: set the step's `table`")
    if verb in ("TransactGetItems", "TransactWriteItems"):
        params["TransactItems"] = [
            {kind: {"TableName": step_table, **spec} for kind, spec in item.items()}
            for item in params["TransactItems"]
        ]
    return DynamoRequest(verb, params)


# -- typed values -------------------------------------------------------------------------


def serialise(value: Any) -> dict[str, Any]:
    """A parent (DuckDB) value as a typed attribute value for a link filter."""
    from boto3.dynamodb.types import TypeSerializer

    if isinstance(value, float):
        value = decimal.Decimal(repr(value))
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        value = value.isoformat()
    elif isinstance(value, uuid.UUID):
        value = str(value)
    elif isinstance(value, bytearray | memoryview):
        value = bytes(value)
    elif not isinstance(value, str | int | bool | bytes | decimal.Decimal):
        value = str(value)
    typed: dict[str, Any] = TypeSerializer().serialize(value)
    return typed


def chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for at in range(0, len(values), size):
        yield values[at : at + size]


# -- link filters -------------------------------------------------------------------------

LINK_OPTION = "dynamo_link"


def apply_link(statement: Statement, link: LinkFilter, database: str) -> Statement:
    """The step restricted to items whose `link.column` is one of the values.

    The values travel as typed data in the statement's options, never as expression text;
    the connector decides at run time (it knows the table's key schema) between BatchGetItem
    calls of 100 keys (the column is the partition key of a plain Scan) and Scans/Queries
    with `#sluice_link IN (:sluice_link0, ...)` (at most 100 operands each) ANDed into the
    FilterExpression.
    """
    req = parse(statement, database)
    if req.verb not in ("Scan", "Query"):
        raise QueryFailed(
            database,
            f"a linked DynamoDB step must be a Scan or a Query, not {req.verb}",
            suggestion='write the child as {"verb": "Scan"} (with a FilterExpression if needed)',
        )
    values = [serialise(v) for v in link.values if v is not None]
    options = dict(statement.options)
    options[LINK_OPTION] = {"column": link.column, "values": values}
    return Statement(
        text=statement.text,
        params=statement.params,
        timeout=statement.timeout,
        readonly=statement.readonly,
        max_rows=statement.max_rows,
        batch_size=statement.batch_size,
        bulk=statement.bulk,
        options=options,
    )


def link_filter(params: dict[str, Any], column: str, values: list[Any]) -> dict[str, Any]:
    """Scan/Query parameters with `column IN (values)` ANDed into the FilterExpression;
    names and values go through placeholders of their own."""
    out = dict(params)
    names = dict(out.get("ExpressionAttributeNames") or {})
    attr_values = dict(out.get("ExpressionAttributeValues") or {})
    names["#sluice_link"] = column
    holders = []
    for i, v in enumerate(values):
        holder = f":sluice_link{i}"
        attr_values[holder] = v
        holders.append(holder)
    cond = f"#sluice_link IN ({', '.join(holders)})"
    existing = out.get("FilterExpression")
    out["FilterExpression"] = f"({existing}) AND {cond}" if existing else cond
    out["ExpressionAttributeNames"] = names
    out["ExpressionAttributeValues"] = attr_values
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
