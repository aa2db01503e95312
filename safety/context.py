"""One step as the stages see it: the input, its language and dialect (from the database
type, never its name), the policy that applies, and the analysis parsed once and shared.

The analysis is computed on first use (PROMPT_GUARD runs before any parsing) and cached by
(dialect, text) across requests; GUARDRAILS writes the emitted text, cap and timeout here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.mql import MqlAnalysis, analyse_mql
from safety.policy import DatabaseGrants, TableGrant, database_grants
from safety.sql_access import TableRef
from safety.sql_analysis import SqlAnalysis, analyse_sql
from safety.sql_template import Hit, match

if TYPE_CHECKING:
    from connectors.config import DatabaseConfig
    from engine.config import Config
    from safety.types import CheckRequest, Operation, StepInput

# database type -> (language, sqlglot dialect or "mql")
DIALECTS: dict[str, tuple[str, str]] = {
    "postgresql": ("sql", "postgres"),
    "mysql": ("sql", "mysql"),
    "sqlite": ("sql", "sqlite"),
    "duckdb": ("sql", "duckdb"),
    "mongodb": ("mql", "mql"),
}
LANGUAGES: tuple[str, ...] = ("sql", "mql", "cypher", "es_dsl", "vector", "dynamo", "couchdb")


class StepContext:
    __slots__ = (
        "_analysis",
        "_grants",
        "config",
        "db",
        "dialect",
        "language",
        "request",
        "row_cap",
        "link_text",
        "step",
        "template",
        "text",
        "timeout",
        "run_text",
        "params",
    )

    def __init__(self, request: CheckRequest, config: Config, step: StepInput) -> None:
        self.request = request
        self.config = config
        self.step = step
        self.language, self.dialect = DIALECTS.get(step.db_type, ("", ""))
        self.db: DatabaseConfig | None = config.database(step.database)
        self._analysis: SqlAnalysis | MqlAnalysis | None = None
        self._grants: DatabaseGrants | None = None
        # a checked text this one differs from only in inert literals (safety/sql_template)
        self.template: Hit | None = None
        # written by GUARDRAILS
        self.text: str | None = None
        self.row_cap: int | None = None
        self.link_text: str | None = None
        self.run_text: str | None = None  # `text` with inert literals bound as `params`
        self.params: tuple[object, ...] = ()
        self.timeout: float = config.safety.query_timeout_seconds

    @property
    def label(self) -> str:
        return f"step {self.step.step_id}" if self.step.step_id else "the query"

    @property
    def analysis(self) -> SqlAnalysis | MqlAnalysis:
        if self._analysis is None:
            if self.language == "mql":
                self._analysis = analyse_mql(self.step.query)
            else:
                self.template = match(self.dialect, self.step.query)
                self._analysis = (
                    self.template.analysis
                    if self.template is not None
                    else analyse_sql(self.dialect, self.step.query)
                )
        return self._analysis

    @property
    def grants(self) -> DatabaseGrants:
        if self._grants is None:
            self._grants = database_grants(
                self.config, self.request.principal, self.step.database, self.dialect
            )
        return self._grants

    @property
    def operation(self) -> Operation:
        return self.analysis.operation

    def access(self) -> list[tuple[TableRef, str]]:
        """(table, operation) pairs the policy must grant."""
        a = self.analysis
        if isinstance(a, SqlAnalysis):
            return list(a.access)
        if a.error is not None:
            return []
        out = [(TableRef(self.step.table), a.operation)]
        out += [(TableRef(name), "SELECT") for name in a.lookups]
        return out

    def declared(self) -> TableRef:
        """The step's `table` as a reference (`public.users` keeps its schema)."""
        if self.language == "mql":
            return TableRef(self.step.table)
        parts = self.step.table.lower().split(".")
        if len(parts) == 1:
            return TableRef(parts[0])
        if len(parts) == 2:
            return TableRef(parts[1], parts[0])
        return TableRef(parts[-1], parts[-2], ".".join(parts[:-2]))

    def grant(self, ref: TableRef) -> TableGrant:
        return self.grants.lookup(ref.name, ref.schema, ref.catalog)

    def same_table(self, a: TableRef, b: TableRef) -> bool:
        """Same name, and same schema where both give one (the default schema matches none)."""
        if a.name != b.name or a.catalog != b.catalog:
            return False
        if a.schema == b.schema:
            return True
        defaults = self.grants.default_schemas
        return (not a.schema and b.schema in defaults) or (not b.schema and a.schema in defaults)
