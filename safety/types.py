"""What the safety pipeline reads and what it returns. The API builds a `CheckRequest` of
`Step`s (each step as the user wrote it), `safety.pipeline.check()` returns a
`SafetyOutcome`; the engine executes only the `CheckedStep`s in it (what is checked is exactly
what runs). A step's field is declared once: on Step (what the user sends) or on
CheckedStep/Rewrite (what checking decides); a checked step keeps its spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

Operation = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "DDL"]
StageName = Literal["PROMPT_GUARD", "RBAC_GATE", "AST_CHECKER", "INJECTION_ANALYSER", "GUARDRAILS"]
Finding = tuple[str, str | None]  # (reason, suggestion) of a structural or injection finding


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table as written: `name` with optional `schema` and `catalog` (lower-cased)."""

    name: str
    schema: str = ""
    catalog: str = ""

    @property
    def display(self) -> str:
        return ".".join(p for p in (self.catalog, self.schema, self.name) if p)


class Step(msgspec.Struct, kw_only=True):
    """One step as the user wrote it: the lone query of /v1/query/simple (no `step_id`) or a
    step of a federated DAG (engine.ir.StepSpec, which requires the id and adds the link).
    `language` is what the user asked for (None = infer); the language and dialect that
    apply come from the database's connector type in the config, never from its name."""

    step_id: str | None = None
    database: str
    table: str
    query: str
    language: str | None = None
    depends_on: list[str] = msgspec.field(default_factory=list)  # PARTIAL strips dependants


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[Step]
    principal: str | None = None  # None: the `permissions.default` set applies
    transport: str = "rest/local"
    client: str | None = None
    body_bytes: int = 0  # size of the HTTP body, for PROMPT_GUARD's limit
    # rows per step, already bounded by the caller (api/service); None: max_rows_per_query
    max_rows: int | None = None


@dataclass(frozen=True, slots=True)
class Rewrite:
    """GUARDRAILS' result (the language writes it): the text that runs, the cap the client
    sees (None: no cap; the text fetches cap + 1 so truncation shows), and the text a link
    filter is applied to (None: into `text`)."""

    text: str
    row_cap: int | None
    # The checked text without the row cap. A link filter goes into this text, so the cap
    # counts rows after the filter (capping first would drop matching rows); the connector's
    # max_rows (row_cap + 1) still enforces the cap. None: link into `text` (MQL filters first).
    link_text: str | None = None
    # What the connector runs when it differs from `text`: the same statement with inert
    # literals bound as `params` (safety/languages/sql_template.py), so one prepared
    # statement serves every key.
    run_text: str | None = None
    params: tuple[object, ...] = ()


class CheckedStep(msgspec.Struct, kw_only=True):
    """A step that passed: its spec as sent, what checking found (language, dialect,
    operation, tables) and the rewrite the connector must run, unchanged.

    `readonly` is False only when the policy granted the write it needs.
    """

    spec: Step
    language: str
    dialect: str
    operation: Operation
    rewrite: Rewrite
    timeout: float
    readonly: bool = True
    tables: list[str] = msgspec.field(default_factory=list)  # every table it touches

    # read through, so a field is declared once (on the spec or the rewrite)
    @property
    def step_id(self) -> str | None:
        return self.spec.step_id

    @property
    def database(self) -> str:
        return self.spec.database

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def original(self) -> str:
        return self.spec.query

    @property
    def text(self) -> str:
        return self.rewrite.text

    @property
    def row_cap(self) -> int | None:
        return self.rewrite.row_cap

    @property
    def link_text(self) -> str | None:
        return self.rewrite.link_text

    @property
    def run_text(self) -> str | None:
        return self.rewrite.run_text

    @property
    def params(self) -> tuple[object, ...]:
        return self.rewrite.params


class StageVerdict(msgspec.Struct, kw_only=True):
    """One stage's verdict on one step, for the audit log (policy = the entry that decided)."""

    stage: StageName
    outcome: Literal["pass", "warn", "block"]
    step_id: str | None = None
    reason: str | None = None
    policy: str | None = None


class RequestBlock(msgspec.Struct, kw_only=True):
    """Why the whole request is refused: the stage, and the step it refused."""

    stage: StageName
    reason: str
    suggestion: str | None = None
    step_id: str | None = None
    invalid: str | None = None  # a malformed request: its 400's error code (not a 403)


class SafetyOutcome(msgspec.Struct, kw_only=True):
    """`block` is set when the request must be refused (403). Under deny_policy PARTIAL a
    federated request may pass with some steps stripped (`stripped` names them, and a warning
    says so); `steps` then holds only the steps that run."""

    stages_passed: list[StageName] = msgspec.field(default_factory=list)
    warnings: list[str] = msgspec.field(default_factory=list)
    block: RequestBlock | None = None
    steps: list[CheckedStep] = msgspec.field(default_factory=list)
    stripped: list[str] = msgspec.field(default_factory=list)
    verdicts: list[StageVerdict] = msgspec.field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.block is None
