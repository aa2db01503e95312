"""Admission of a submitted run, answered synchronously before it is queued: the config
parsed (400 naming the line and column), validated as a federated query (422), checked by
the safety pipeline (422 with the stage), and optionally a doctor report that pings every
database the run uses (422 when one fails)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from api import metrics as m
from api.errors import ApiError
from connectors.errors import SluiceError
from engine.dagfile import DagInvalid, DagParseError, parse_dag
from engine.dagfile import to_query as dag_to_query
from engine.ir import FederatedQuery
from engine.run_admission import run_digest
from engine.run_records import scoped_key

if TYPE_CHECKING:
    from api.run_envelopes import RunSubmit
    from api.service import QueryService, RequestContext
    from engine.catalog import Catalog
    from engine.run_records import RunRecord
    from engine.runs import RunManager


def parse_config(text: str | dict[str, Any], fmt: str) -> Any:
    """The config body as plain data; 400 naming the line and column of a parse error."""
    if isinstance(text, dict):
        return text
    try:
        return parse_dag(text, fmt, "config")
    except DagParseError as exc:
        raise ApiError(
            400,
            exc.code,
            exc.problems[0].replace("not valid", "config is not valid"),
            details={"format": exc.format, "line": exc.line, "column": exc.column},
        ) from None


def to_query(data: Any) -> FederatedQuery:
    """The federated query; 422 naming the line and path of a validation error."""
    try:
        query = dag_to_query(data, "config")
    except DagInvalid as exc:
        raise ApiError(
            422,
            exc.code,
            f"invalid federated query: {exc.problems[0]}",
            suggestion="the config has the /v1/query body: steps and merge",
        ) from None
    if query.dry_run:
        raise ApiError(
            422,
            "invalid_config",
            "a run cannot be a dry run",
            suggestion="use POST /v1/query with dry_run to see the plan",
        )
    return query


def canonical(query: FederatedQuery) -> str:
    return msgspec.json.encode(msgspec.to_builtins(query), order="sorted").decode()


def check(service: QueryService, query: FederatedQuery, ctx: RequestContext) -> None:
    """Validation and safety, synchronously: each refusal is a 422 with details."""
    try:
        outcome = service.check_federated(query, ctx, export=True).safety
    except SluiceError as exc:
        details = dict(exc.details or {})
        step_id = getattr(exc, "step_id", None)
        if step_id:
            details.setdefault("step_id", step_id)
        raise ApiError(
            422, exc.code, exc.message, suggestion=exc.suggestion, details=details or None
        ) from None
    block = outcome.block
    if block is not None and block.invalid is not None:  # malformed, not a safety refusal
        raise ApiError(
            422,
            block.invalid,
            block.reason,
            suggestion=block.suggestion,
            details={"step_id": block.step_id},
        )
    if block is not None:
        m.safety_blocked(block.stage)
        raise ApiError(
            422,
            "blocked",
            f"blocked by {block.stage}: {block.reason}",
            suggestion=block.suggestion,
            details={"stage": block.stage, "reason": block.reason, "step_id": block.step_id},
        )


async def doctor(catalog: Catalog, query: FederatedQuery) -> list[dict[str, Any]]:
    """Ping every database the run uses; 422 with the report when one fails."""
    report: list[dict[str, Any]] = []

    async def probe(name: str) -> None:
        state = catalog.get(name)
        started = time.perf_counter()
        entry: dict[str, Any] = {"database": name, "ok": False, "latency_ms": None, "error": None}
        try:
            if state is None:
                raise ValueError("not configured")
            with anyio.fail_after(state.config.connect_timeout_seconds + 5):
                await state.connector.ping()
            entry["ok"] = True
        except TimeoutError:
            entry["error"] = "ping timed out"
        except Exception as exc:  # any failure is a finding of the report, not a 500
            entry["error"] = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        entry["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        report.append(entry)

    async with anyio.create_task_group() as tg:
        for name in sorted({s.database for s in query.steps}):
            tg.start_soon(probe, name)
    report.sort(key=lambda e: e["database"])
    if not all(e["ok"] for e in report):
        failed = [e["database"] for e in report if not e["ok"]]
        raise ApiError(
            422,
            "doctor_failed",
            f"preflight failed for {', '.join(failed)}",
            suggestion="fix the databases, or submit without doctor_first",
            details={"report": report},
        )
    return report


async def submit(
    service: QueryService, runs: RunManager, body: RunSubmit, ctx: RequestContext
) -> RunRecord:
    """Parse, check (validation, safety, optional doctor) and queue a run, or replay the run
    of a known idempotency key: the one submit path of REST and MCP."""
    from api.runs_routes import config_query  # the parse, off the event loop

    query = await config_query(service, body)
    config = canonical(query)
    digest = run_digest(
        config,
        name=body.name,
        labels=body.labels,
        timeout_secs=body.timeout_secs,
        options={"doctor_first": body.doctor_first},
    )
    # a replay is answered before any check or admission (never a 429 for a known run)
    # keys are per principal: another's key never finds, conflicts with or names its run
    key = None if body.idempotency_key is None else scoped_key(ctx.principal, body.idempotency_key)
    existing = await runs.replay(key, digest) if key else None
    if existing is None:
        check(service, query, ctx)
        report = await doctor(service.catalog, query) if body.doctor_first else None
        existing, _ = await runs.submit(
            config,
            name=body.name,
            labels=body.labels,
            timeout_secs=body.timeout_secs,
            idempotency_key=key,
            doctor_report=report,
            principal=ctx.principal,
            options={"doctor_first": body.doctor_first},
            steps=[s.step_id for s in query.steps],
        )
    return existing
