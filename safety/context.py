"""One step as the stages see it: the input, its language object and dialect (from the
database's connector type, never its name), the policy that applies, and the analysis parsed
once and shared.

The analysis is computed on first use (PROMPT_GUARD runs before any parsing) and cached by
the language per text across requests; GUARDRAILS writes the emitted text, cap and timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from connectors import registry as connectors
from connectors.errors import UnknownConnector
from safety.languages import registry as languages
from safety.policy import DatabaseGrants, TableGrant, database_grants

if TYPE_CHECKING:
    from connectors.config import DatabaseConfig
    from safety.config import CheckConfig
    from safety.languages.base import Analysis, Language
    from safety.types import CheckRequest, Operation, StepInput, TableRef


def speaks(db_type: str) -> tuple[Language, str] | None:
    """(language, dialect) of a database type, or None when sluice has no connector for it."""
    try:
        cls = connectors.get(db_type)
    except UnknownConnector:
        return None
    return languages.get(cls.language), cls.dialect


class StepContext:
    __slots__ = (
        "_access",
        "_analysis",
        "_declared",
        "_grant_of",
        "_grants",
        "config",
        "db",
        "dialect",
        "lang",
        "language",
        "link_text",
        "request",
        "row_cap",
        "step",
        "text",
        "timeout",
        "run_text",
        "params",
    )

    def __init__(self, request: CheckRequest, config: CheckConfig, step: StepInput) -> None:
        self.request = request
        self.config = config
        self.step = step
        spoken = speaks(step.db_type)
        self.lang: Language | None = spoken[0] if spoken else None
        # read by every stage after PROMPT_GUARD, which lets no step without a language on
        self.language: Language = cast("Language", self.lang)
        self.dialect = spoken[1] if spoken else ""
        self.db: DatabaseConfig | None = config.database(step.database)
        self._analysis: Analysis | None = None
        self._grants: DatabaseGrants | None = None
        # asked by several stages (and per column by the language): computed once per step
        self._access: list[tuple[TableRef, Operation]] | None = None
        self._declared: TableRef | None = None
        self._grant_of: dict[TableRef, TableGrant] = {}
        # written by GUARDRAILS
        self.text: str | None = None
        self.row_cap: int | None = None
        self.link_text: str | None = None
        self.run_text: str | None = None  # `text` with parameters bound as `params`
        self.params: tuple[object, ...] = ()
        self.timeout: float = config.safety.query_timeout_seconds

    @property
    def database(self) -> str:
        return self.step.database

    @property
    def table(self) -> str:
        return self.step.table

    @property
    def label(self) -> str:
        return f"step {self.step.step_id}" if self.step.step_id else "the query"

    @property
    def analysis(self) -> Analysis:
        if self._analysis is None:
            self._analysis = self.language.analyse(self.step.query, self.dialect)
        return self._analysis

    @property
    def grants(self) -> DatabaseGrants:
        if self._grants is None:
            schemas = _default_schemas(self.db, self.step)
            self._grants = database_grants(
                self.config, self.request.principal, self.step.database, schemas
            )
        return self._grants

    @property
    def operation(self) -> Operation:
        return self.analysis.operation

    def access(self) -> list[tuple[TableRef, Operation]]:
        """(table, operation) pairs the policy must grant."""
        if self._access is None:
            self._access = self.language.access(self.analysis, self.step.table)
        return self._access

    def declared(self) -> TableRef:
        """The step's `table` as a reference (`public.users` keeps its schema)."""
        if self._declared is None:
            self._declared = self.language.declared(self.step.table)
        return self._declared

    def grant(self, ref: TableRef) -> TableGrant:
        found = self._grant_of.get(ref)
        if found is None:
            found = self._grant_of[ref] = self.grants.lookup(ref.name, ref.schema, ref.catalog)
        return found

    def same_table(self, a: TableRef, b: TableRef) -> bool:
        """Same name, and same schema where both give one (the default schema matches none)."""
        if a.name != b.name or a.catalog != b.catalog:
            return False
        if a.schema == b.schema:
            return True
        defaults = self.grants.default_schemas
        return (not a.schema and b.schema in defaults) or (not b.schema and a.schema in defaults)


def _default_schemas(db: DatabaseConfig | None, step: StepInput) -> tuple[str, ...]:
    if db is not None:
        return db.default_schemas()
    try:  # not configured (a policy may still name it): the type's defaults
        settings = connectors.settings_type(step.db_type)
        return settings(name=step.database).default_schemas()
    except (UnknownConnector, TypeError, ValueError):
        return ()
