"""What the safety stages ask of a query language; one `Language` object per language.

A language module (safety/languages/<name>.py) owns everything sluice knows about one query
language: parsing a step body into an `Analysis` (targets with the operation each needs,
findings), column/field denies, the GUARDRAILS rewrite and the empty probe. The five stages
call these methods and never test a language's name. Languages are registered through the
`sluice.languages` entry points (see safety/languages/registry.py).

The link filter itself is bound by the connector (`Connector.with_link`: parameter style,
native value types); the language decides which text it is applied to (`Rewrite.link_text`)
and how a step with no link values learns its columns (`empty_probe`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Protocol

# Rewrite is part of the Language API (a language returns it); it lives with the step types
from safety.types import Rewrite as Rewrite

if TYPE_CHECKING:
    from connectors.base import Connector, Statement
    from safety.policy import TableGrant
    from safety.types import Finding, Operation, TableRef
    from safety.verdicts import Block


class Analysis(Protocol):
    """A step body parsed once (cached by the language), read by every stage."""

    @property
    def error(self) -> str | None:
        """Why the body cannot be analysed (AST_CHECKER blocks with it), or None."""

    @property
    def suggestion(self) -> str | None: ...

    # optional: `invalid` True says `error` is the text's own (it does not parse), answered
    # as a 400 naming the problem rather than a 403 refusal (read with getattr, default False)

    @property
    def operation(self) -> Operation:
        """The step's operation class: SELECT, INSERT, UPDATE, DELETE or DDL."""

    @property
    def unbounded(self) -> bool:
        """An UPDATE/DELETE of every row (needs the A level)."""

    @property
    def structural(self) -> tuple[Finding, ...]:
        """AST_CHECKER's blocks: statement kinds and side effects sluice never runs."""

    @property
    def injection_blocks(self) -> tuple[Finding, ...]: ...

    @property
    def injection_warnings(self) -> tuple[str, ...]: ...


class StepView(Protocol):
    """What a language may read of the step being checked (safety.context.StepContext)."""

    @property
    def database(self) -> str: ...

    @property
    def table(self) -> str:
        """The step's declared `table` as the client wrote it."""

    @property
    def label(self) -> str:
        """ "step <id>" or "the query", for messages."""

    def grant(self, ref: TableRef) -> TableGrant:
        """The policy entry that applies to a table (its level and denied columns)."""
        ...

    def same_table(self, a: TableRef, b: TableRef) -> bool:
        """Same table, counting the database's default schemas (`public.t` is `t`)."""
        ...


class Language(ABC):
    """One query language. Instances are stateless and shared; caching is per text."""

    name: ClassVar[str]
    # Body shapes a client can copy, one per entry; MCP tool descriptions list them.
    examples: ClassVar[tuple[str, ...]] = ()
    # A body longer than this is checked in a worker thread (sqlglot takes seconds of CPU on
    # a large SQL text); a language whose parse is a JSON decode can afford more on the loop.
    check_on_loop_chars: ClassVar[int] = 4_096

    @abstractmethod
    def analyse(self, text: str, dialect: str) -> Analysis:
        """Parse and analyse a step body (`dialect` is the connector's `dialect`)."""

    @abstractmethod
    def declared(self, table: str) -> TableRef:
        """The step's declared `table` as a reference (`public.users` keeps its schema)."""

    @abstractmethod
    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        """Every (table/collection/index, operation) the body touches, for RBAC_GATE."""

    @abstractmethod
    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        """The (target, operation) pairs an unbounded write needs the A level on."""

    @abstractmethod
    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        """Why the body works on something other than the step's table, or None
        (AST_CHECKER: what is checked is what runs)."""

    @abstractmethod
    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        """A block when the body reads or filters a denied column/field, else None."""

    def prompt_text(self, query: str) -> str:
        """The part of the body PROMPT_GUARD reads for natural-language destructive intent
        (a structured body's strings are data, not intent: return "")."""
        return query

    @abstractmethod
    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        """GUARDRAILS: the row cap (cap + 1 fetched) on reads and the statement timeout."""

    @abstractmethod
    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        """A statement that returns the step's columns and no rows (a step whose linked
        parent was empty still creates its table for the merge)."""
