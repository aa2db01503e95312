"""QueryService: the one path every transport takes (HTTP handlers, CLI, Python):
validate the request -> safety pipeline -> engine -> envelope. Nothing runs that the pipeline
did not check; the engine runs the pipeline's rewritten text, unchanged."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import msgspec

from api import metrics
from api.envelopes import (
    Data,
    DryRunResponse,
    DryRunStep,
    Metadata,
    QuerySuccess,
    SafetyReport,
    SimpleQueryRequest,
)
from connectors import registry as connectors
from connectors.errors import QueryTimedOut, SluiceError, UnknownConnector
from engine.bounds import check_depth, check_steps
from engine.errors import (
    DatabaseUnreachable,
    InvalidRequest,
    RequestTimedOut,
    ResultTruncated,
    StepUnknownTable,
    UnknownDatabase,
    UnknownTable,
)
from engine.execute import Outcome
from engine.federated import (
    OFF_LOOP_CHARS,
    FederatedResult,
    StepProgress,
    explain,
    request_chars,
    run_federated,
)
from engine.ir import FederatedQuery
from engine.offload import off_loop
from engine.parse_pool import ParsePool
from engine.plan import CheckedPlan
from engine.simple import OFF_LOOP_ROWS, BytesInFlight, InlineBudget, StepResult, run_simple
from engine.spark_handoff import Handoff
from safety import pipeline
from safety.audit import AuditBlock, AuditEntry, AuditStep
from safety.catalog_view import database_visible, grants_for, tables_view
from safety.languages import registry as languages
from safety.types import CheckedStep, CheckRequest, RequestBlock, SafetyOutcome, Step

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine.catalog import DatabaseState
    from engine.runtime import Runtime

T = TypeVar("T")
REQUEST_GRACE_S = 1.0  # past a request's time bound, before it is stopped from here


class SafetyBlocked(SluiceError):
    """Raised when the safety pipeline refused the request (HTTP 403, `status: blocked`)."""

    code = "blocked"
    status = 403

    def __init__(self, block: RequestBlock) -> None:
        super().__init__(block.reason, suggestion=block.suggestion)
        self.block = block


class QueryInvalid(SluiceError):
    """Raised when the pipeline found the request malformed rather than unsafe: a query its
    language cannot read (a syntax error, `invalid_query`) or a language its database does
    not speak (`invalid_request`). The client's mistake, answered 400, never a 403."""

    code = "invalid_query"
    status = 400

    def __init__(self, block: RequestBlock) -> None:
        super().__init__(block.reason, suggestion=block.suggestion)
        self.block = block
        self.code = block.invalid or self.code
        self.details = {"step_id": block.step_id} if block.step_id else None


def blocked(block: RequestBlock) -> SluiceError:
    """The error for a request the pipeline stopped: a malformed one is the client's (400),
    anything else a safety refusal (403)."""
    return QueryInvalid(block) if block.invalid is not None else SafetyBlocked(block)


class AuditSink(Protocol):
    def record(self, entry: AuditEntry) -> None: ...


@dataclass(slots=True)
class Audited:
    """A request's audit entry while it runs, and its rows per step (for the metrics)."""

    entry: AuditEntry
    rows_by_step: dict[str | None, int] = field(default_factory=dict)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    principal: str | None = None
    transport: str = "rest/local"
    client: str | None = None
    body_bytes: int = 0

    def check_request(self, steps: list[Step], max_rows: int | None = None) -> CheckRequest:
        """What the safety pipeline reads: the steps and who asks, how, from where."""
        return CheckRequest(
            steps=steps,
            max_rows=max_rows,
            principal=self.principal,
            transport=self.transport,
            client=self.client,
            body_bytes=self.body_bytes,
        )


class QueryService:
    """The request path over one running `engine.runtime.Runtime` (its catalog, sink,
    result store and audit log)."""

    def __init__(self, runtime: Runtime) -> None:
        self.config = runtime.config
        self.catalog = runtime.catalog
        self.sink = runtime.sink
        self.store = runtime.store
        self.spark = runtime.spark
        self.audit: AuditSink | None = runtime.audit
        self.answer_bytes = BytesInFlight(self.config.limits.max_bytes_in_flight)
        self.parse_pool = ParsePool()  # large run configs are parsed in a child process

    # -- simple -----------------------------------------------------------------------------
    async def simple(
        self, req: SimpleQueryRequest, ctx: RequestContext
    ) -> QuerySuccess | DryRunResponse:
        started = time.perf_counter()
        state = self._state(req.database, ctx.principal)
        db_type = state.config.type
        request = ctx.check_request([req.step()])
        if len(req.query) > _on_loop_chars(req.language or spoken_by(db_type)):
            outcome = await off_loop(pipeline.check, request, self.config)
        else:
            outcome = pipeline.check(request, self.config)
        audit = self._audit_entry(ctx, request, outcome)
        seconds = max((s.timeout for s in outcome.steps), default=None)
        return await self._finishing(
            audit,
            started,
            bounded(self._simple_run(req, ctx, state, outcome, audit, started), seconds),
        )

    async def _simple_run(
        self,
        req: SimpleQueryRequest,
        ctx: RequestContext,
        state: DatabaseState,
        outcome: SafetyOutcome,
        audit: Audited,
        started: float,
    ) -> QuerySuccess | DryRunResponse:
        if outcome.block is not None:
            raise blocked(outcome.block)
        step = outcome.steps[0]
        report = SafetyReport(stages_passed=outcome.stages_passed, warnings=list(outcome.warnings))
        if req.dry_run:
            return DryRunResponse(
                request_id=ctx.request_id,
                status="dry_run",
                safety=report,
                steps=[dry_run_step(step)],
            )
        self._reachable(req.database)
        if step.operation != "DDL" and await self.catalog.find_table(state, req.table) is None:
            raise UnknownTable(req.database, req.table, self.visible_tables(ctx.principal, state))
        budget = InlineBudget(self.config.limits.max_inline_bytes, self.answer_bytes)
        try:
            return await self._simple_answer(req, ctx, state, step, report, audit, started, budget)
        finally:
            budget.release()

    async def _simple_answer(
        self,
        req: SimpleQueryRequest,
        ctx: RequestContext,
        state: DatabaseState,
        step: CheckedStep,
        report: SafetyReport,
        audit: Audited,
        started: float,
        budget: InlineBudget,
    ) -> QuerySuccess:
        result = await run_simple(step, state, budget=budget)
        report.warnings.extend(result.warnings)
        audit.entry.rows = len(result.rows) if result.rows_affected is None else None
        audit.entry.rows_affected = result.rows_affected
        audit.rows_by_step = {None: len(result.rows)}
        if len(result.rows) > OFF_LOOP_ROWS:
            data = await off_loop(to_data, result, True)
        else:
            data = to_data(result)
        return QuerySuccess(
            request_id=ctx.request_id,
            status="ok",
            data=data,
            safety=report,
            metadata=Metadata(
                database=req.database,
                execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
                transport=ctx.transport,
                steps=[],
                merge_latency_ms=None,
            ),
        )

    # -- federated --------------------------------------------------------------------------
    def row_cap(self, query: FederatedQuery, ctx: RequestContext, export: bool) -> int | None:
        """Rows per step: an inline request keeps safety.max_rows_per_query (max_rows may
        lower it); an export or a run asked for the whole answer and gets its principal's
        export bound, which max_rows may lower or raise up to."""
        bound = (
            self.config.export_rows_for(ctx.principal)
            if export
            else self.config.safety.max_rows_per_query
        )
        asked = query.max_rows
        if asked is not None and not 1 <= asked <= bound:
            where = (
                "safety.max_export_rows (or auth.tokens[].max_export_rows)"
                if export
                else "safety.max_rows_per_query; exports and runs have a larger bound"
            )
            raise InvalidRequest(
                f"max_rows must be from 1 to {bound:,} for this request, got {asked:,}",
                suggestion=f"the bound is {where}",
            )
        return asked if asked is not None else (bound if export else None)

    def check_federated(
        self, query: FederatedQuery, ctx: RequestContext, *, export: bool = False
    ) -> CheckedPlan:
        """Validate the DAG once (400s name the step; the merge is parsed here) and run the
        safety pipeline once; runs nothing. The checked plan is what the engine then runs."""
        limits = self.config.limits
        check_steps(query, limits, self.config.safety.max_query_chars)
        plan = explain(query, self.catalog.names())
        check_depth({s: n.parents for s, n in plan.nodes.items()}, plan.order, limits.max_dag_depth)
        max_rows = self.row_cap(query, ctx, export)
        for step in query.steps:
            self._state(step.database, ctx.principal)  # 404 for an unknown database
        # the steps as sent: the pipeline reads them, no copy
        request = ctx.check_request(list(query.steps), max_rows)
        return CheckedPlan(query, plan, request, pipeline.check(request, self.config))

    async def federated(
        self,
        query: FederatedQuery,
        ctx: RequestContext,
        *,
        on_progress: Callable[[StepProgress], None] | None = None,
        result_id: str | None = None,
        export: bool = False,
        bound_whole_request: bool = True,
    ) -> QuerySuccess | DryRunResponse:
        """Run a federated DAG; its whole result is stored under `result_id` (default: the
        request id) for GET /v1/results. An `export` (a file, a run) has its own row bound
        and fails with ResultTruncated when a step hit its cap, unless the query allows it.
        The whole request, merge included, is bounded by the query timeout unless
        `bound_whole_request` is False (a run has its own bound)."""
        started = time.perf_counter()
        if request_chars(query) > OFF_LOOP_CHARS:
            checked = await off_loop(
                functools.partial(self.check_federated, query, ctx, export=export)
            )
        else:
            checked = self.check_federated(query, ctx, export=export)
        audit = self._audit_entry(ctx, checked.request, checked.safety)
        work = self._federated_run(checked, ctx, audit, started, on_progress, result_id)
        if export and not query.allow_truncation:
            work = self._complete(work, query, ctx, checked.request.max_rows or 0)
        seconds = None
        if bound_whole_request:  # each step's timeout is already min(database, safety)
            seconds = max((s.timeout for s in checked.safety.steps), default=None)
        return await self._finishing(audit, started, bounded(work, seconds))

    async def _complete(
        self,
        work: Awaitable[QuerySuccess | DryRunResponse],
        query: FederatedQuery,
        ctx: RequestContext,
        cap: int,
    ) -> QuerySuccess | DryRunResponse:
        """The export's result, or ResultTruncated (its stored result removed) when a step
        stopped at its cap."""
        result = await work
        if isinstance(result, QuerySuccess):
            cut = [m.step_id for m in result.metadata.steps if m.status == Outcome.TRUNCATED]
            if cut:
                await anyio.to_thread.run_sync(self.store.delete, result.request_id)
                raise ResultTruncated(cut, cap, self.config.export_rows_for(ctx.principal))
        return result

    async def _federated_run(
        self,
        checked: CheckedPlan,
        ctx: RequestContext,
        audit: Audited,
        started: float,
        on_progress: Callable[[StepProgress], None] | None,
        result_id: str | None,
    ) -> QuerySuccess | DryRunResponse:
        outcome = checked.safety
        if outcome.block is not None:
            raise blocked(outcome.block)
        report = SafetyReport(stages_passed=outcome.stages_passed, warnings=list(outcome.warnings))
        if checked.query.dry_run:
            # what a dry run can tell: Spark asked for but not configured, a merge it refuses
            Handoff.prepare(checked.query.engine, self.spark, checked.plan, checked.plan.merge)
            return DryRunResponse(
                request_id=ctx.request_id,
                status="dry_run",
                safety=report,
                plan=repr(checked.plan.keep(list(checked.steps))),
                steps=[dry_run_step(s) for s in outcome.steps],
            )
        used = {s.database for s in outcome.steps}
        states = {name: self._reachable(name) for name in sorted(used)}
        for step in outcome.steps:  # a missing table is a 404, as on the simple path
            state = states[step.database]
            if step.operation != "DDL" and await self.catalog.find_table(state, step.table) is None:
                known = self.visible_tables(ctx.principal, state)
                raise StepUnknownTable(step.step_id or "", step.database, step.table, known)
        result = await run_federated(
            checked,
            {n: st.connector for n, st in states.items()},
            sink=self.sink,
            store=self.store,
            safety=self.config.safety,
            request_id=result_id or ctx.request_id,
            on_progress=on_progress,
            limiters={n: st.limiter for n, st in states.items()},
            owner=ctx.principal,
            spark=self.spark,
        )
        report.warnings.extend(result.warnings)
        if result.memory is not None:
            memory = result.memory
            metrics.federated_memory(
                memory.peak_rss_bytes, len(memory.spilled_steps), memory.spilled_bytes
            )
        audit.entry.rows = result.row_count
        audit.entry.steps_meta = msgspec.to_builtins(result.steps)
        audit.rows_by_step = {m.step_id: m.rows_returned for m in result.steps}
        return federated_success(ctx, report, result, started)

    async def _finishing(
        self,
        audit: Audited,
        started: float,
        work: Awaitable[QuerySuccess | DryRunResponse],
    ) -> QuerySuccess | DryRunResponse:
        try:
            response = await work
        except BaseException as exc:
            audit.entry.error = f"{type(exc).__name__}: {exc}"
            self._finish(audit, started, exc)
            raise
        self._finish(audit, started, None)
        return response

    def _finish(self, audit: Audited, started: float, exc: BaseException | None) -> None:
        """Every query ends here: one audit line and the query metrics, whatever happened."""
        entry = audit.entry
        entry.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        rows = audit.rows_by_step
        if entry.blocked is not None:
            outcome = "blocked"
            metrics.safety_blocked(entry.blocked.stage)
        elif exc is None:
            outcome = "ok"
        elif isinstance(exc, QueryTimedOut | RequestTimedOut) or isinstance(
            getattr(exc, "cause", None), QueryTimedOut
        ):
            outcome = "timeout"
        else:
            outcome = "error"
        seconds = entry.latency_ms / 1000 if isinstance(entry.latency_ms, float) else 0.0
        for database in {step.database for step in entry.steps}:
            metrics.query_seconds(database, seconds)
        for step in entry.steps:
            metrics.query_finished(
                step.database, step.language or "", outcome, rows.get(step.step_id, 0)
            )
        if self.audit is not None:
            self.audit.record(entry)

    def visible_databases(self, principal: str | None) -> list[str]:
        """Configured databases the principal's permission set names (for listings and
        "did you mean" suggestions: a name it may not use is never shown)."""
        return [n for n in self.catalog.names() if database_visible(self.config, principal, n)]

    def visible_tables(self, principal: str | None, state: DatabaseState) -> list[str]:
        grants = grants_for(self.config, principal, state.config)
        return [t.name for t in tables_view(grants, state.tables)]

    def _state(self, database: str, principal: str | None = None) -> DatabaseState:
        state = self.catalog.get(database)
        if state is None:
            raise UnknownDatabase(database, self.visible_databases(principal))
        return state

    def _spoken_by(self, database: str) -> str | None:
        """The language a configured database speaks (its connector type says)."""
        db = self.config.database(database)
        return None if db is None else spoken_by(db.type)

    def _reachable(self, database: str) -> DatabaseState:
        state = self._state(database)
        if not state.reachable:
            raise DatabaseUnreachable(
                f"database {database!r} is unreachable: {state.error}",
                suggestion="check that the server is up; sluice retries in the background",
            )
        return state

    def _audit_entry(
        self, ctx: RequestContext, request: CheckRequest, outcome: SafetyOutcome
    ) -> Audited:
        rewritten = {s.step_id: s.text for s in outcome.steps}
        block = outcome.block
        entry = AuditEntry(
            request_id=ctx.request_id,
            ts=time.time(),
            principal=ctx.principal,
            transport=ctx.transport,
            client=ctx.client,
            steps=[
                AuditStep(
                    step_id=s.step_id,
                    database=s.database,
                    table=s.table,
                    language=s.language or self._spoken_by(s.database),
                    query=s.query,
                    rewritten=rewritten.get(s.step_id),
                )
                for s in request.steps
            ],
            verdicts=list(outcome.verdicts),
            blocked=None if block is None else AuditBlock(stage=block.stage, reason=block.reason),
            warnings=list(outcome.warnings),
        )
        return Audited(entry)


async def bounded(
    work: Awaitable[T], seconds: float | None, setting: str = "query_timeout_seconds"
) -> T:
    """`work` stopped (cancelled, so every native query and the merge are interrupted) once
    `seconds` have passed since it started: one bound over every phase of a request."""
    if seconds is None:
        return await work
    try:
        # the database's own statement timeout fires first and names the query; asyncio's
        # timeout, not anyio's scope (half the cost, on every request)
        async with asyncio.timeout(seconds + REQUEST_GRACE_S):
            return await work
    except TimeoutError:
        raise RequestTimedOut(seconds, setting) from None


def _on_loop_chars(language: str | None) -> int:
    """The longest body checked on the event loop (sqlglot on a large text: seconds of CPU)."""
    if language is None or not languages.known(language):
        return OFF_LOOP_CHARS
    return languages.get(language).check_on_loop_chars


def spoken_by(db_type: str) -> str | None:
    """The language a database type speaks (its connector says), None for an unknown type."""
    try:
        return connectors.get(db_type).language
    except UnknownConnector:
        return None


def dry_run_step(step: CheckedStep) -> DryRunStep:
    return DryRunStep(
        step_id=step.step_id,
        database=step.database,
        table=step.table,
        language=step.language,
        operation=step.operation,
        original=step.original,
        rewritten=step.text,
        row_cap=step.row_cap,
        timeout_seconds=step.timeout,
    )


def to_data(result: StepResult, release: bool = False) -> Data:
    """The answer's rows as objects. `release` empties `result.rows` here: freeing a
    million tuples takes the GIL for a while, so it happens in the caller's worker thread
    rather than on the event loop when the request's frames end."""
    names = [c.name for c in result.columns]
    rows = [dict(zip(names, row, strict=True)) for row in result.rows]
    if release:
        result.rows = []
    return Data(
        columns=names,
        rows=rows,
        row_count=len(rows),
        truncated=result.truncated,
        rows_affected=result.rows_affected,
    )


def federated_success(
    ctx: RequestContext, report: SafetyReport, result: FederatedResult, started: float
) -> QuerySuccess:
    return QuerySuccess(
        request_id=ctx.request_id,
        status="ok",
        data=Data(
            columns=result.columns,
            rows=result.rows,
            row_count=result.row_count,
            truncated=result.truncated,
        ),
        safety=report,
        metadata=Metadata(
            database=None,
            execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
            transport=ctx.transport,
            steps=result.steps,
            merge_latency_ms=result.merge_latency_ms,
            result_pages=result.result_pages,
            memory=result.memory,
            merge_engine=result.merge_engine,
        ),
    )
