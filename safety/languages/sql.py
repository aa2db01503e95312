"""SQL as a `Language`: every SQL database (its sqlglot dialect comes from the connector).

The work is done by the sql_* modules beside this one: sql_parse (parse once), sql_access
(tables, operations, column uses), sql_findings and sql_names (structural and injection
findings), sql_analysis (all of it cached per (dialect, text)) and sql_rewrite (row cap).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.languages.sql_analysis import SqlAnalysis, analyse_sql
from safety.languages.sql_rewrite import rewrite_sql
from safety.languages.sql_template import Hit, add_render, learn, match
from safety.types import Finding, Operation, TableRef
from safety.verdicts import Block

if TYPE_CHECKING:
    from connectors.base import Connector, Statement


class SqlLanguage(Language):
    name: ClassVar[str] = "sql"
    examples: ClassVar[tuple[str, ...]] = (
        "SELECT id, name FROM users WHERE created_at >= '2025-01-01' ORDER BY id LIMIT 100",
        "SELECT status, count(*) AS n FROM orders GROUP BY status",
        "UPDATE orders SET status = 'shipped' WHERE id = 42",
    )

    def analyse(self, text: str, dialect: str) -> SqlAnalysis:
        hit = match(dialect, text)  # differs from a checked text only in inert literals?
        if hit is not None:
            return hit.bound_analysis()
        return analyse_sql(dialect, text)

    def declared(self, table: str) -> TableRef:
        parts = table.lower().split(".")
        if len(parts) == 1:
            return TableRef(parts[0])
        if len(parts) == 2:
            return TableRef(parts[1], parts[0])
        return TableRef(parts[-1], parts[-2], ".".join(parts[:-2]))

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, SqlAnalysis)
        return list(analysis.access)

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE")]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, SqlAnalysis)
        mains = list(analysis.main_tables) or [ref for ref, _ in analysis.access]
        declared = self.declared(step.table)
        if mains and not any(step.same_table(declared, m) for m in mains):
            names = ", ".join(dict.fromkeys(m.display for m in mains))
            return (
                f"the query works on {names}, not on the step's table {step.table!r}",
                f"set the step's table to {mains[0].display!r}, or query {step.table!r}",
            )
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, SqlAnalysis)
        for use in analysis.columns:
            grant = step.grant(use.table)
            if not grant.deny_columns:
                continue
            where = f"{step.database}.{use.table.display}"
            if use.column == "*":
                return Block(
                    f"Access denied: `*` on {where} would return denied columns "
                    f"({', '.join(sorted(grant.deny_columns))})",
                    "list the columns you need instead of `*`",
                    f"{grant.entry}.deny_columns",
                )
            if use.column in grant.deny_columns:
                return Block(
                    f"Access denied: column {where}.{use.column} is denied "
                    f"({use.use}); policy {grant.entry}.deny_columns",
                    f"remove {use.column} from the query, or remove it from "
                    f"{grant.entry}.deny_columns in sluice.yaml",
                    f"{grant.entry}.deny_columns",
                )
        return None

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, SqlAnalysis)
        row_cap = cap if analysis.returns_rows else None
        fetch = None if row_cap is None else row_cap + 1
        hit: Hit | None = analysis.template
        if hit is not None:
            done = hit.rewrite(fetch) or add_render(hit, fetch)
            if done is not None:
                return Rewrite(done.text, row_cap, done.link_text, done.run_text, done.params)
        text = rewrite_sql(dialect, query, fetch)
        # the link filter goes into the text without the cap, so the cap counts rows after
        # the filter (capping first would drop matching rows); max_rows still enforces it
        link_text = text if fetch is None else rewrite_sql(dialect, query, None)
        if hit is None:
            learn(dialect, query, analysis, fetch, text, link_text)
        return Rewrite(text, row_cap, link_text)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        text = statement.text.strip().rstrip(";")
        return dataclasses.replace(
            statement, text=f"SELECT * FROM ({text}) AS sluice_probe WHERE 1 = 0"
        )
