"""QueryService: the one path every transport takes (HTTP handlers, CLI, Python):
validate the request -> safety pipeline -> engine -> envelope. Nothing runs that the pipeline
did not check; the engine runs the pipeline's rewritten text, unchanged."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from api.envelopes import (
    Data,
    DryRunResponse,
    DryRunStep,
    Metadata,
    QuerySuccess,
    SafetyReport,
    SimpleQueryRequest,
)
from engine.errors import DatabaseUnreachable, InvalidRequest, UnknownDatabase, UnknownTable
from engine.simple import StepResult, run_simple
from safety import pipeline
from safety.types import Block, CheckedStep, CheckRequest, SafetyOutcome, StepInput
from sluice.errors import SluiceError

if TYPE_CHECKING:
    from engine.catalog import Catalog
    from engine.config import Config

# The reference's languages; a connector speaks exactly one of them.
LANGUAGES: tuple[str, ...] = ("sql", "mql", "cypher", "es_dsl", "vector", "dynamo", "couchdb")
LANGUAGE_OF_TYPE: dict[str, str] = {
    "postgresql": "sql", "mysql": "sql", "sqlite": "sql", "duckdb": "sql", "mongodb": "mql",
}


class QueryBlocked(SluiceError):
    """Raised when the safety pipeline refused the request (HTTP 403, `status: blocked`)."""

    code = "blocked"

    def __init__(self, block: Block) -> None:
        super().__init__(block.reason, suggestion=block.suggestion)
        self.block = block


class AuditSink(Protocol):
    def record(self, entry: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class RequestContext:
    request_id: str
    principal: str | None = None
    transport: str = "rest/local"
    client: str | None = None
    body_bytes: int = 0


class QueryService:
    def __init__(self, config: Config, catalog: Catalog, audit: AuditSink | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.audit = audit

    # -- simple -----------------------------------------------------------------------------
    async def simple(self, req: SimpleQueryRequest,
                     ctx: RequestContext) -> QuerySuccess | DryRunResponse:
        started = time.perf_counter()
        state = self.catalog.get(req.database)
        if state is None:
            raise UnknownDatabase(req.database, self.catalog.names())
        db_type = state.config.type
        check_language(req.language, req.database, db_type)
        request = CheckRequest(
            steps=[StepInput(step_id=None, database=req.database, db_type=db_type,
                             table=req.table, query=req.query, language=req.language)],
            principal=ctx.principal, transport=ctx.transport, client=ctx.client,
            body_bytes=ctx.body_bytes,
        )
        outcome = pipeline.check(request, self.config)
        audit = self._audit_entry(ctx, request, outcome)
        try:
            if outcome.block is not None:
                raise QueryBlocked(outcome.block)
            step = outcome.steps[0]
            report = SafetyReport(stages_passed=outcome.stages_passed,
                                  warnings=list(outcome.warnings))
            if req.dry_run:
                return DryRunResponse(request_id=ctx.request_id, status="dry_run",
                                      safety=report, steps=[dry_run_step(step)])
            if not state.reachable:
                raise DatabaseUnreachable(
                    f"database {req.database!r} is unreachable: {state.error}",
                    suggestion="check that the server is up; sluice retries in the background",
                )
            if step.operation != "DDL" and await self.catalog.find_table(state, req.table) is None:
                raise UnknownTable(req.database, req.table, [t.name for t in state.tables])
            result = await run_simple(step, state)
            report.warnings.extend(result.warnings)
            audit["rows"] = len(result.rows) if result.rows_affected is None else None
            audit["rows_affected"] = result.rows_affected
            return QuerySuccess(
                request_id=ctx.request_id,
                status="ok",
                data=to_data(result),
                safety=report,
                metadata=Metadata(
                    database=req.database,
                    execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
                    transport=ctx.transport,
                    steps=[],
                    merge_latency_ms=None,
                ),
            )
        except BaseException as exc:
            audit["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            audit["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if self.audit is not None:
                self.audit.record(audit)

    def _audit_entry(self, ctx: RequestContext, request: CheckRequest,
                     outcome: SafetyOutcome) -> dict[str, Any]:
        rewritten = {s.step_id: s.text for s in outcome.steps}
        return {
            "request_id": ctx.request_id,
            "ts": time.time(),
            "principal": ctx.principal,
            "transport": ctx.transport,
            "client": ctx.client,
            "steps": [
                {"step_id": s.step_id, "database": s.database, "table": s.table,
                 "language": s.language or LANGUAGE_OF_TYPE.get(s.db_type),
                 "query": s.query, "rewritten": rewritten.get(s.step_id)}
                for s in request.steps
            ],
            "verdicts": [
                {"stage": v.stage, "outcome": v.outcome, "step_id": v.step_id,
                 "reason": v.reason, "policy": v.policy}
                for v in outcome.verdicts
            ],
            "blocked": None if outcome.block is None else
            {"stage": outcome.block.stage, "reason": outcome.block.reason},
            "warnings": list(outcome.warnings),
        }


def check_language(language: str | None, database: str, db_type: str) -> None:
    """A requested language must be one we know and the one the database speaks."""
    if language is None:
        return
    spoken = LANGUAGE_OF_TYPE.get(db_type)
    if language not in LANGUAGES:
        raise InvalidRequest(
            f"unknown language {language!r}",
            suggestion=f"use one of {', '.join(LANGUAGES)}, or omit it to infer it from the "
                       f"database ({database!r} speaks {spoken})",
        )
    if language != spoken:
        raise InvalidRequest(
            f"language {language!r} does not match database {database!r}, a {db_type} "
            f"database that speaks {spoken}",
            suggestion=f"send language {spoken!r} or omit it",
        )


def dry_run_step(step: CheckedStep) -> DryRunStep:
    return DryRunStep(step_id=step.step_id, database=step.database, table=step.table,
                      language=step.language, operation=step.operation,
                      original=step.original, rewritten=step.text, row_cap=step.row_cap,
                      timeout_seconds=step.timeout)


def to_data(result: StepResult) -> Data:
    names = [c.name for c in result.columns]
    rows = [dict(zip(names, row, strict=True)) for row in result.rows]
    return Data(columns=names, rows=rows, row_count=len(rows), truncated=result.truncated,
                rows_affected=result.rows_affected)
