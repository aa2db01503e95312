"""One step as the stages see it: the step as sent, its database's configured type with the
language object and dialect it gives (never from the database's name), the policy that
applies, and the analysis parsed once and shared.

The analysis is computed on first use (PROMPT_GUARD runs before any parsing) and cached by
the language per text across requests; GUARDRAILS writes the rewrite and the timeout.
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
    from safety.types import CheckRequest, Operation, Rewrite, Step, TableRef


def speaks(db_type: str | None) -> tuple[Language, str] | None:
    """(language, dialect) of a database type, or None when sluice has no connector for it."""
    if db_type is None:
        return None
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
        "db_type",
        "dialect",
        "lang",
        "language",
        "request",
        "rewrite",
        "step",
        "timeout",
    )

    def __init__(self, request: CheckRequest, config: CheckConfig, step: Step) -> None:
        self.request = request
        self.config = config
        self.step = step
        self.db: DatabaseConfig | None = config.database(step.database)
        # None: not configured (PROMPT_GUARD blocks it)
        self.db_type: str | None = self.db.type if self.db is not None else None
        spoken = speaks(self.db_type)
        self.lang: Language | None = spoken[0] if spoken else None
        # read by every stage after PROMPT_GUARD, which lets no step without a language on
        self.language: Language = cast("Language", self.lang)
        self.dialect = spoken[1] if spoken else ""
        self._analysis: Analysis | None = None
        self._grants: DatabaseGrants | None = None
        # asked by several stages (and per column by the language): computed once per step
        self._access: list[tuple[TableRef, Operation]] | None = None
        self._declared: TableRef | None = None
        self._grant_of: dict[TableRef, TableGrant] = {}
        # written by GUARDRAILS (None without it: the text runs as sent, uncapped)
        self.rewrite: Rewrite | None = None
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
            schemas = self.db.default_schemas() if self.db is not None else ()
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
