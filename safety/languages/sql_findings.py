"""What is dangerous in a SQL statement, found on the AST (never in raw text, so `'--'` or
`update` inside a string literal and a column named `update_at` are never findings).

Two lists come out of one walk:
- `structural`: side effects AST_CHECKER refuses at any level. They count as writes or DDL,
  but none is allowed through the query API: time-based, file, network and dynamic-SQL
  functions, COPY, SELECT ... INTO, writing CTEs, row locks, sequence writes in a read.
- `injection`: what INJECTION_ANALYSER reports, each a block or a warning: the same
  time/file/network functions (so a one-stage run still catches them), credential catalogs,
  comment truncation, MySQL executable comments, OR-tautologies and NULL-column UNION probes
  (warnings), catalog reads (warnings).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from safety.languages.sql_access import is_cte_reference, is_real_table
from safety.languages.sql_names import (
    CATALOG_SCHEMAS,
    CATALOG_TABLES,
    CREDENTIAL_SCHEMAS,
    CREDENTIAL_TABLES,
    FILE_LIKE,
    TABLE_FUNCTIONS,
    classify_function,
    function_name,
)

_SQLISH = re.compile(
    r"\b(and|or|where|union|select|limit|from|having|order\s+by)\b.*"
    r"(=|<|>|\blike\b|\bin\b|\d|')",
    re.IGNORECASE | re.DOTALL,
)

# (reason, suggestion)
Finding = tuple[str, str | None]


@dataclass(slots=True)
class Findings:
    structural: list[Finding] = field(default_factory=list)
    injection_blocks: list[Finding] = field(default_factory=list)
    injection_warnings: list[str] = field(default_factory=list)


def find(
    tree: exp.Expression,
    dialect: str,
    operation: str | None,
    comments: tuple[str, ...],
    trailing: str | None,
) -> Findings:
    out = Findings()
    structural, blocks, warns = out.structural, out.injection_blocks, out.injection_warnings
    never = "never allowed through sluice"
    for node in tree.walk():
        if isinstance(node, exp.Or):  # before Func: connectors are Func subclasses
            for side in (node.this, node.expression):
                if is_tautology(side):
                    warns.append(
                        f"tautology `{side.sql(dialect=dialect)}` under OR makes the "
                        "filter match every row"
                    )
        elif isinstance(node, exp.Connector | exp.Binary | exp.Unary):
            continue
        elif isinstance(node, exp.Func):
            _function(node, operation, out)
        elif isinstance(node, exp.Table):
            _table(node, dialect, out)
        elif isinstance(node, exp.Lock):
            structural.append(
                (
                    f"{node.sql(dialect=dialect)} takes row locks (counted as a write); {never}",
                    "drop the locking clause",
                )
            )
        elif (
            isinstance(node, exp.Insert | exp.Update | exp.Delete | exp.Merge) and node is not tree
        ):
            kind = type(node).__name__.upper()
            structural.append(
                (
                    f"a data-modifying {kind} inside another statement (a writing "
                    f"CTE or subquery) is {never}",
                    f"send the {kind} as its own statement",
                )
            )
        elif isinstance(node, exp.Select) and node.args.get("into") is not None:
            structural.append(
                (
                    f"SELECT ... INTO creates a table (counted as DDL); {never}",
                    "select the rows without INTO",
                )
            )
        elif isinstance(node, exp.Union):
            for side in (node.left, node.right):
                if (
                    isinstance(side, exp.Select)
                    and len(side.expressions) > 1
                    and all(isinstance(e, exp.Null) for e in side.expressions)
                ):
                    warns.append("UNION branch of NULL columns (looks like column-count probing)")
    if dialect == "mysql":
        for comment in comments:
            if comment.lstrip().startswith("!"):
                blocks.append(
                    (
                        "MySQL executable comment `/*!...*/` hides SQL the server runs",
                        "remove the comment",
                    )
                )
    for comment in comments:
        if comment.count("'") % 2 or comment.count('"') % 2:
            blocks.append(
                (
                    f"comment `{comment.strip()[:60]}` holds an unbalanced quote "
                    "(a statement cut off by a comment)",
                    "remove the comment",
                )
            )
            break
    if trailing is not None and _SQLISH.search(trailing) and not blocks:
        warns.append(
            f"trailing comment `{trailing.strip()[:60]}` looks like SQL cut off from the statement"
        )
    return out


def _function(node: exp.Func, operation: str | None, out: Findings) -> None:
    name = function_name(node)
    kind = classify_function(name)
    if kind is None and type(node).__name__.startswith("Read"):
        kind = "file"
    never = "never allowed through sluice"
    if kind == "time":
        out.structural.append(
            (f"{name}() is a time-based side effect (counted as DDL); {never}", "remove the call")
        )
        out.injection_blocks.append(
            (f"time-based function {name}() (blind injection pattern)", "remove the call")
        )
    elif kind == "file":
        out.structural.append(
            (
                f"{name}() reads files, the network or a query string (counted as DDL); {never}",
                "read tables of a configured database instead",
            )
        )
        out.injection_blocks.append(
            (f"file/network function {name}()", "read tables of a configured database instead")
        )
    elif kind == "side_effect":
        out.structural.append(
            (f"{name}() changes server state (counted as a write); {never}", "remove the call")
        )
    elif kind == "sequence" and operation == "SELECT":
        out.structural.append(
            (
                f"{name}() writes a sequence, but the statement is a read that runs read-only",
                "call it inside an INSERT or UPDATE",
            )
        )


def _table(node: exp.Table, dialect: str, out: Findings) -> None:
    if not is_real_table(node):
        inner = node.this
        name = function_name(inner) if isinstance(inner, exp.Func) else type(inner).__name__
        if name not in TABLE_FUNCTIONS:
            if classify_function(name) is None and not type(inner).__name__.startswith("Read"):
                # an unknown table function may read files or remote data: refuse it
                shown = " ".join(node.sql(dialect=dialect).split())[:60]
                out.structural.append(
                    (
                        f"table function `{shown}` is not allowed in FROM (allowed: "
                        "generate_series, unnest, range, json_each and similar)",
                        "read tables of a configured database instead",
                    )
                )
        return
    if is_cte_reference(node):
        return
    name, schema = node.name.lower(), node.db.lower()
    if dialect == "duckdb" and FILE_LIKE.search(node.name):
        # DuckDB reads `FROM 'file.csv'` / `FROM "x.parquet"` as files (replacement scans)
        out.structural.append(
            (
                f"`{node.name}` names a file (DuckDB reads it directly); "
                "never allowed through sluice",
                "read tables of a configured database instead",
            )
        )
        return
    if (
        name in CREDENTIAL_TABLES
        and (schema in ("", "pg_catalog") or CREDENTIAL_SCHEMAS.get(name) == schema)
        and (name != "user" or schema == "mysql")
    ):
        out.injection_blocks.append((f"{node.sql()} holds credentials", None))
    elif (
        schema in CATALOG_SCHEMAS
        or name in CATALOG_TABLES
        or (not schema and name.startswith("pg_") and dialect == "postgres")
    ):
        out.injection_warnings.append(f"reads the system catalog ({node.sql()})")


def is_tautology(node: exp.Expression) -> bool:
    """An always-true operand: TRUE, a non-zero number, `x = x`, or two literals comparing true."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        return not node.is_string and node.this not in ("0", "0.0")
    if isinstance(node, exp.Not) and isinstance(node.this, exp.Boolean):
        return not node.this.this
    if isinstance(node, exp.Or):
        return is_tautology(node.this) or is_tautology(node.expression)
    if isinstance(node, exp.EQ | exp.GTE | exp.LTE) and node.this == node.expression:
        return True
    if (
        isinstance(node, exp.EQ | exp.NEQ | exp.GT | exp.LT | exp.GTE | exp.LTE)
        and isinstance(node.this, exp.Literal)
        and isinstance(node.expression, exp.Literal)
    ):
        left, right = _value(node.this), _value(node.expression)
        try:
            return bool(_COMPARE[type(node)](left, right))
        except TypeError:
            return False
    return False


_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], bool]] = {
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.GT: lambda a, b: a > b,
    exp.LT: lambda a, b: a < b,
    exp.GTE: lambda a, b: a >= b,
    exp.LTE: lambda a, b: a <= b,
}


def _value(lit: exp.Literal) -> object:
    if lit.is_string:
        return lit.this
    try:
        return float(lit.this)
    except ValueError:
        return lit.this
