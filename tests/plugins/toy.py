"""A third-party connector and its own query language, defined only here (the acceptance
test of the plugin interfaces: nothing outside tests/ knows about them).

`toyql` reads one table: `get id, name from gadgets` (or `get * from gadgets`). Its
GUARDRAILS rewrite compiles the body to the SQLite SQL the toy connector runs, so the toy
connector keeps its native text (SQLite SQL, what the conformance suite sends it) while
clients speak toyql. The connector's I/O is the built-in SQLite connector's (subclassed):
what this module adds is a type name, a settings struct, a language and a registration.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from connectors import registry as connector_registry
from connectors.base import Connector, Statement
from connectors.config import DatabaseConfig, FileSettings
from connectors.sqlite import SQLiteConnector
from safety.languages import registry as language_registry
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.types import Finding, Operation, TableRef
from safety.verdicts import Block

TYPE = "toydb"
LANGUAGE = "toyql"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_BODY = re.compile(
    rf"^\s*get\s+(?P<cols>\*|{_IDENT}(?:\s*,\s*{_IDENT})*)\s+from\s+(?P<table>{_IDENT})\s*;?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ToyAnalysis:
    columns: tuple[str, ...]
    table: str
    error: str | None = None
    suggestion: str | None = None
    operation: Operation = "SELECT"
    unbounded: bool = False
    structural: tuple[Finding, ...] = ()
    injection_blocks: tuple[Finding, ...] = ()
    injection_warnings: tuple[str, ...] = ()


class ToyLanguage(Language):
    name: ClassVar[str] = LANGUAGE

    def analyse(self, text: str, dialect: str) -> ToyAnalysis:
        m = _BODY.match(text)
        if m is None:
            return ToyAnalysis(
                (), "", error="not a toyql body", suggestion="write `get a, b from table`"
            )
        cols = tuple(c.strip().lower() for c in m["cols"].split(","))
        return ToyAnalysis(cols, m["table"].lower())

    def declared(self, table: str) -> TableRef:
        return TableRef(table.lower())

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, ToyAnalysis)
        return [] if analysis.error else [(TableRef(analysis.table), "SELECT")]

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        return []  # toyql never writes

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, ToyAnalysis)
        if analysis.table != step.table.lower():
            return (f"toyql reads {analysis.table}, not {step.table}", None)
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, ToyAnalysis)
        grant = step.grant(TableRef(analysis.table))
        for col in analysis.columns:
            if col == "*" and grant.deny_columns or col in grant.deny_columns:
                return Block(f"toyql: {col} is denied", "name other columns", grant.entry)
        return None

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, ToyAnalysis)
        cols = ", ".join(c if c == "*" else f'"{c}"' for c in analysis.columns)
        sql = f'SELECT {cols} FROM "{analysis.table}"'
        return Rewrite(f"{sql} LIMIT {cap + 1}", cap, link_text=sql)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        return dataclasses.replace(
            statement, text=f"SELECT * FROM ({statement.text}) AS probe WHERE 1 = 0"
        )


class ToySettings(FileSettings, tag=TYPE, frozen=True):
    """A toy database: one SQLite file."""


class ToyConnector(SQLiteConnector):
    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (ToySettings,)
    language: ClassVar[str] = LANGUAGE
    dialect: ClassVar[str] = "sqlite"  # the native text toyql compiles to


@contextmanager
def installed() -> Iterator[None]:
    """Register the toy connector and language the way their entry points would."""
    connector_registry.register(TYPE, ToyConnector)
    language_registry.register(ToyLanguage())
    try:
        yield
    finally:
        connector_registry.unregister(TYPE)
        language_registry.unregister(LANGUAGE)
