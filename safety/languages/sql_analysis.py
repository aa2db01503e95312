"""Everything the stages need to know about one SQL body, computed once per (dialect, text).

A repeated dashboard query hits the cache and skips every AST walk: only the policy lookup
(RBAC_GATE) and the cached rewrite (GUARDRAILS) run per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from safety.languages.sql_access import (
    ColumnUse,
    column_uses,
    main_tables,
    statement_operation,
    table_access,
)
from safety.languages.sql_findings import Finding, find, is_tautology
from safety.languages.sql_names import FILE_LIKE
from safety.languages.sql_parse import Parsed, parse
from safety.text_cache import text_cache
from safety.types import Operation, TableRef

log = logging.getLogger("sluice.safety")

# Statement kinds sluice runs; everything else is refused by AST_CHECKER with its name.
_CREATE_KINDS = frozenset({"TABLE", "VIEW", "INDEX"})


@dataclass(frozen=True, slots=True)
class SqlAnalysis:
    parsed: Parsed
    error: str | None  # parse error, several statements, or an unsupported statement kind
    suggestion: str | None
    operation: Operation
    access: tuple[tuple[TableRef, Operation], ...]  # (table, SELECT/INSERT/UPDATE/DELETE/DDL)
    main_tables: tuple[TableRef, ...]
    columns: tuple[ColumnUse, ...]
    unbounded: bool  # DELETE/UPDATE without a real WHERE
    structural: tuple[Finding, ...]
    injection_blocks: tuple[Finding, ...]
    injection_warnings: tuple[str, ...]
    # set on a text that shares a checked text's template (sql_template.Hit): the rewrite
    # renders the template with this text's literals instead of generating SQL
    template: Any = None
    # the error is the text's (it does not parse): a 400 naming the problem, not a refusal
    invalid: bool = False

    @property
    def tree(self) -> exp.Expression | None:
        return self.parsed.tree

    @property
    def returns_rows(self) -> bool:
        """A query whose rows the guardrails cap (not a write, DDL or EXPLAIN)."""
        return self.operation == "SELECT" and self.parsed.explain is None and self.error is None


@text_cache
def analyse_sql(dialect: str, text: str) -> SqlAnalysis:
    parsed = parse(dialect, text)
    try:
        return _analyse(dialect, parsed)
    except RecursionError:
        return _failed(parsed, "SQL is nested too deeply to analyse", "simplify the query")
    except Exception:  # fail closed: a statement we cannot analyse never runs
        log.exception("safety analysis failed for a %s statement", dialect)
        return _failed(
            parsed,
            "sluice could not analyse this statement, so it is refused rather than run unchecked",
            "simplify the query",
        )


def _analyse(dialect: str, parsed: Parsed) -> SqlAnalysis:
    if parsed.error is not None:
        return _failed(parsed, parsed.error, "fix the SQL and send it again", invalid=True)
    if len(parsed.statements) != 1:
        return _failed(
            parsed,
            f"the body holds {len(parsed.statements)} statements (stacked "
            "statements); exactly one is allowed",
            "send one statement per step",
        )
    tree = parsed.statements[0]
    inner = statement_operation(tree)
    problem = _unsupported(tree, inner)
    if problem is not None:
        return _failed(parsed, *problem)
    assert inner is not None
    access = table_access(tree)
    if dialect == "duckdb":
        # `FROM 'file.csv'` is a file read (AST_CHECKER refuses it), not a table to grant
        access = [(ref, op) for ref, op in access if not FILE_LIKE.search(ref.name)]
    if parsed.explain is not None and not parsed.explain_analyze:
        # EXPLAIN without ANALYZE plans, never runs: a read of every table it names
        access = list(dict.fromkeys((ref, "SELECT") for ref, _ in access))
        operation: Operation = "SELECT"
    else:
        operation = inner
    unbounded = False
    if inner in ("UPDATE", "DELETE") and operation != "SELECT":
        where = tree.args.get("where")
        unbounded = where is None or is_tautology(where.this)
    findings = find(tree, dialect, operation, parsed.comments, parsed.trailing_comment)
    return SqlAnalysis(
        parsed=parsed,
        error=None,
        suggestion=None,
        operation=operation,
        access=tuple(access),
        main_tables=tuple(main_tables(tree)),
        columns=tuple(column_uses(tree)),
        unbounded=unbounded,
        structural=tuple(findings.structural),
        injection_blocks=tuple(findings.injection_blocks),
        injection_warnings=tuple(dict.fromkeys(findings.injection_warnings)),
    )


def _failed(
    parsed: Parsed, error: str, suggestion: str | None, *, invalid: bool = False
) -> SqlAnalysis:
    return SqlAnalysis(
        invalid=invalid,
        parsed=parsed,
        error=error,
        suggestion=suggestion,
        operation="SELECT",
        access=(),
        main_tables=(),
        columns=(),
        unbounded=False,
        structural=(),
        injection_blocks=(),
        injection_warnings=(),
    )


def _unsupported(tree: exp.Expression, operation: Operation | None) -> tuple[str, str] | None:
    """Why a statement kind is refused, or None when sluice runs it."""
    if operation is None:
        if isinstance(tree, exp.Command):
            word = str(tree.this).upper()
            what = f"{word} {str(tree.expression or '').split(' ', 1)[0]}".strip()
        else:
            what = type(tree).__name__.upper()
        return (
            f"{what} statements are not allowed through sluice (only SELECT, INSERT, "
            "UPDATE, DELETE and table/view/index DDL)",
            "run administrative statements with the database's own tools",
        )
    if isinstance(tree, exp.Create | exp.Drop):
        kind = str(tree.args.get("kind") or "").upper()
        if kind not in _CREATE_KINDS:
            verb = "CREATE" if isinstance(tree, exp.Create) else "DROP"
            return (
                f"{verb} {kind} is not allowed through sluice (only tables, views and indexes)",
                "run it with the database's own tools",
            )
    if isinstance(tree, exp.Alter) and str(tree.args.get("kind") or "").upper() != "TABLE":
        return (
            "only ALTER TABLE is allowed through sluice",
            "run it with the database's own tools",
        )
    return None
