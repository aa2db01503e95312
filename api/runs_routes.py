"""The run control plane (reference/runs-api.txt).

`RUN_ENDPOINTS` (/v1/runs...) is the Endpoint list for the route table. A submit is
checked synchronously (400 parse errors with their line, 422 validation and safety
verdicts, 422 doctor report), then queued in the RunManager at `app.state.runs`, which
executes it through `QueryService.federated` with the run id as the result id, so
`/v1/results/{run_id}` pages it and `/v1/runs/{id}/result` downloads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api import metrics as m
from api.downloads import FORMAT_HELP, download, format_param
from api.envelopes import QuerySuccess
from api.errors import ApiError
from api.routes import (
    Endpoint,
    audit_admin_access,
    int_param,
    json_endpoint,
    reader_of,
    request_context,
)
from api.sse import sse_response
from connectors.errors import SluiceError
from engine.bounds import check_nesting, parse_bounded
from engine.dagfile import DagInvalid, DagParseError, parse_dag
from engine.dagfile import to_query as dag_to_query
from engine.errors import InvalidRequest
from engine.ir import FederatedQuery
from engine.offload import off_loop
from engine.results import Reader
from engine.run_store import (
    RunRecord,
    encode_cursor,
    open_store,
    scoped_key,
)
from engine.runs import (
    RunManager,
    RunNotFound,
    RunOutcome,
    RunProgress,
    run_digest,
)

if TYPE_CHECKING:
    from api.service import QueryService, RequestContext
    from engine.catalog import Catalog
    from engine.config import Config

from api.run_envelopes import (
    _BODY_FIELDS,
    _DECODE,
    STATUSES,
    RunAccepted,
    RunList,
    RunSubmit,
    RunView,
    rfc3339,
    view,
)


# -- config parsing ---------------------------------------------------------------------------
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
        outcome, _ = service.check_federated(query, ctx, export=True)
    except SluiceError as exc:
        details = dict(exc.details or {})
        step_id = getattr(exc, "step_id", None)
        if step_id:
            details.setdefault("step_id", step_id)
        raise ApiError(
            422, exc.code, exc.message, suggestion=exc.suggestion, details=details or None
        ) from None
    block = outcome.block
    if block is not None and block.invalid:  # a syntax error: not a safety refusal
        raise ApiError(
            422,
            "invalid_query",
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


# -- handlers ---------------------------------------------------------------------------------
def manager_of(request: Request) -> RunManager:
    runs: RunManager = request.app.state.runs
    return runs


def _decode_body(raw: bytes, max_nesting: int) -> RunSubmit:
    """The submit body (msgspec: C, fast); nesting past the bound is a 400."""
    try:
        data = parse_bounded(lambda: _DECODE.decode(raw), "the body", max_nesting)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_body", f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    check_nesting(data, max_nesting, "the body")
    unknown = sorted(set(data) - _BODY_FIELDS)
    if unknown:
        raise ApiError(
            400,
            "unknown_fields",
            f"unknown field(s): {', '.join(repr(u) for u in unknown)}",
            suggestion=f"allowed fields: {', '.join(sorted(_BODY_FIELDS))}",
            details={"unknown": unknown},
        )
    return msgspec.convert(data, RunSubmit)


def _config_query(body: RunSubmit, max_nesting: int) -> FederatedQuery:
    """The run config's federated query (blocking: a large YAML document is seconds of
    pure Python)."""
    parsed = parse_bounded(
        lambda: parse_config(body.config, body.config_format), "the run config", max_nesting
    )
    check_nesting(parsed, max_nesting, "the run config")
    return to_query(parsed)


def _config_query_outcome(body: RunSubmit, max_nesting: int) -> tuple[Any, ...]:
    """`_config_query` for a child process: its errors come back as data (not every
    exception type survives pickling)."""
    try:
        return ("ok", _config_query(body, max_nesting))
    except ApiError as exc:
        return ("api", exc.status, exc.code, exc.message, exc.suggestion, exc.details)
    except SluiceError as exc:
        status = 400 if isinstance(exc, InvalidRequest) else 422
        return ("api", status, exc.code, exc.message, exc.suggestion, None)


PROCESS_PARSE_CHARS = 16_384  # YAML run configs longer than this are parsed in a child


async def config_query(service: QueryService, body: RunSubmit) -> FederatedQuery:
    """The run config's federated query, off the event loop: a JSON or small YAML config in
    a worker thread, a large YAML config in a child process with a time bound."""
    limits = service.config.limits
    large_yaml = (
        isinstance(body.config, str)
        and body.config_format == "yaml"
        and len(body.config) > PROCESS_PARSE_CHARS
    )
    if not large_yaml:
        return await off_loop(_config_query, body, limits.max_body_nesting)
    outcome = await service.parse_pool.run(
        _config_query_outcome,
        body,
        limits.max_body_nesting,
        seconds=limits.parse_timeout_seconds,
        what="the run config",
    )
    if outcome[0] == "api":
        _, status, code, message, suggestion, details = outcome
        raise ApiError(status, code, message, suggestion=suggestion, details=details)
    query: FederatedQuery = outcome[1]
    return query


@json_endpoint
async def submit_run(request: Request) -> Response:
    raw = await request.body()
    limits = request.app.state.config.limits
    body = await off_loop(_decode_body, raw, limits.max_body_nesting)
    existing = await submit(
        request.app.state.service, manager_of(request), body, request_context(request)
    )
    accepted = RunAccepted(
        run_id=existing.run_id,
        status=existing.status,
        submitted_at=rfc3339(existing.submitted_at) or "",
    )
    return Response(
        msgspec.json.encode(accepted),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/runs/{existing.run_id}"},
    )


async def submit(
    service: QueryService, runs: RunManager, body: RunSubmit, ctx: RequestContext
) -> RunRecord:
    """Parse, check (validation, safety, optional doctor) and queue a run, or replay the run
    of a known idempotency key: the one submit path of REST and MCP."""
    query = await config_query(service, body)
    config = canonical(query)
    digest = run_digest(
        config,
        name=body.name,
        labels=body.labels,
        timeout_secs=body.timeout_secs,
        options={"doctor_first": body.doctor_first},
    )
    # keys are per principal: another's key never finds, conflicts with or names its run
    key = None if body.idempotency_key is None else scoped_key(ctx.principal, body.idempotency_key)
    # a replay is answered before any check or admission (never a 429 for a known run)
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


def _time_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(
            400,
            "invalid_parameter",
            f"query parameter {name!r} must be an RFC3339 time, got {raw!r}",
            suggestion="e.g. 2026-05-29T00:00:00Z",
        ) from None


@json_endpoint
async def list_runs(request: Request) -> RunList:
    limit = int_param(request, "limit", 50, lo=1, hi=500)
    statuses = [s for s in (request.query_params.get("status") or "").split(",") if s]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown status {bad[0]!r}",
            suggestion=f"use one of {', '.join(STATUSES)} (comma-separated)",
        )
    reader = reader_of(request)
    runs = await manager_of(request).list(
        owner=reader.principal,
        any_owner=reader.admin,  # the admin grant lists everyone's (audited per run read)
        status=statuses,
        name=request.query_params.get("name"),
        since=_time_param(request, "since"),
        until=_time_param(request, "until"),
        limit=limit + 1,
        cursor=request.query_params.get("cursor"),
    )
    more = len(runs) > limit
    runs = runs[:limit]
    return RunList(
        runs=[view(r) for r in runs], next_cursor=encode_cursor(runs[-1]) if more else None
    )


async def owned_run(runs: RunManager, run_id: str, reader: Reader) -> RunRecord:
    """The run, if `reader` may see it: its own, or any with the admin grant; another
    principal's run is as absent as an unknown id (REST and MCP)."""
    record = await runs.get(run_id)
    if record.principal != reader.principal and not reader.admin:
        raise RunNotFound(run_id)
    return record


async def _get(request: Request) -> RunRecord:
    """`owned_run` for this request; the admin grant's look at another's run is audited."""
    run_id = request.path_params["run_id"]
    record = await owned_run(manager_of(request), run_id, reader_of(request))
    audit_admin_access(request, "run", run_id, record.principal)
    return record


@json_endpoint
async def show_run(request: Request) -> RunView:
    return view(await _get(request))


@json_endpoint
async def delete_run(request: Request) -> Response:
    run_id = (await _get(request)).run_id
    await manager_of(request).delete(run_id)
    store = getattr(request.app.state.service, "store", None)
    if store is not None:
        await anyio.to_thread.run_sync(store.delete, run_id)
    return Response(status_code=204)


@json_endpoint
async def cancel_run(request: Request) -> Response:
    record, accepted = await manager_of(request).cancel((await _get(request)).run_id)
    return Response(
        msgspec.json.encode(view(record)),
        status_code=202 if accepted else 200,
        media_type="application/json",
    )


@json_endpoint
async def run_logs(request: Request) -> Response:
    record = await _get(request)
    after = 0
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw:
        try:
            after = max(0, int(raw))
        except ValueError:
            raise ApiError(
                400,
                "invalid_parameter",
                f"Last-Event-ID must be an event id (an integer), got {raw!r}",
            ) from None
    return sse_response(manager_of(request), record.run_id, after)


@json_endpoint
async def run_result(request: Request) -> Response:
    record = await _get(request)
    fmt = format_param(request, "parquet")
    assert fmt is not None
    if record.status != "completed":
        raise ApiError(
            409,
            "run_not_completed",
            f"run {record.run_id} is {record.status}",
            suggestion="wait for status completed (GET /v1/runs/{id})",
        )
    store = request.app.state.service.store
    return download(store, record.run_id, fmt, reader_of(request), record.name)


RUN_ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/v1/runs",
        submit_run,
        "Submit a run of a federated query (YAML or JSON); checked synchronously.",
        response=RunAccepted,
        body=RunSubmit,
        status=202,
        errors=(400, 409, 413, 422, 429, 503),
    ),
    Endpoint(
        "GET",
        "/v1/runs",
        list_runs,
        "List runs, newest first, with a keyset cursor.",
        response=RunList,
        query=(
            ("limit", "runs per page, max 500", 50),
            ("status", "comma-separated statuses", None),
            ("name", "exact run name", None),
            ("since", "RFC3339: submitted at or after", None),
            ("until", "RFC3339: submitted before", None),
            ("cursor", "next_cursor of the previous page", None),
        ),
        errors=(400,),
    ),
    Endpoint(
        "GET",
        "/v1/runs/{run_id}",
        show_run,
        "One run record, live while it runs.",
        response=RunView,
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/v1/runs/{run_id}",
        delete_run,
        "Remove a finished run, its idempotency key and its stored result.",
        status=204,
        errors=(404, 409),
    ),
    Endpoint(
        "POST",
        "/v1/runs/{run_id}/cancel",
        cancel_run,
        "Cancel a run: 202 when it was live, 200 when already finished.",
        response=RunView,
        status=202,
        also=(200,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/v1/runs/{run_id}/logs",
        run_logs,
        "The run's log as Server-Sent Events (log, truncated, end); resumes after Last-Event-ID.",
        errors=(400, 404),
        extra={"x-content-type": "text/event-stream"},
    ),
    Endpoint(
        "GET",
        "/v1/runs/{run_id}/result",
        run_result,
        "Download a completed run's whole result (streamed).",
        query=(("format", FORMAT_HELP, None),),
        errors=(400, 404, 409),
    ),
]


# -- wiring -----------------------------------------------------------------------------------
def service_executor(
    service: QueryService,
) -> Callable[[RunRecord, RunProgress], Awaitable[RunOutcome]]:
    """Execute a run through QueryService.federated, reporting step progress into the run
    and storing the whole result under the run id."""
    from api.service import RequestContext

    async def execute(record: RunRecord, progress: RunProgress) -> RunOutcome:
        query = msgspec.json.decode(record.config, type=FederatedQuery)
        ctx = RequestContext(
            request_id=f"req_{record.run_id[-12:]}", principal=record.principal, transport="run"
        )
        began: dict[str, float] = {}

        def on_progress(p: Any) -> None:
            if p.event == "started":
                began[p.step_id] = p.at_ms
            if p.event == "finished":
                progress.step(
                    p.step_id, "completed", p.rows, p.at_ms - began.get(p.step_id, p.at_ms)
                )
            else:
                progress.step(p.step_id, "running", p.rows)

        result = await service.federated(
            query,
            ctx,
            on_progress=on_progress,
            result_id=record.run_id,
            export=True,
            bound_whole_request=False,  # a run is bounded by its timeout_secs
        )
        assert isinstance(result, QuerySuccess)  # a run is never a dry run (to_query refuses)
        for meta in result.metadata.steps:
            state = "completed" if meta.status == "ok" else meta.status
            progress.step(meta.step_id, state, meta.rows_returned, meta.latency_ms)
        for warning in result.safety.warnings:
            progress.log(f"warning: {warning}", "warning")
        return RunOutcome(records_written=result.data.row_count, result_id=record.run_id)

    return execute


def build_run_manager(
    config: Config,
    service: QueryService,
    *,
    max_concurrent_runs: int | None = None,
    max_queued_runs: int | None = None,
    store_url: str | None = None,
) -> RunManager:
    """The manager for create_app's lifespan. Settings: explicit arguments, else the
    SLUICE_MAX_CONCURRENT_RUNS / SLUICE_MAX_QUEUED_RUNS / SLUICE_RUN_STORE environment
    (how `sluice serve` flags reach hypercorn workers), else config.server, else defaults."""
    server = config.server

    def setting(arg: Any, env: str, attr: str, default: Any, cast: Any = int) -> Any:
        if arg is not None:
            return arg
        if os.environ.get(env):
            return cast(os.environ[env])
        return getattr(server, attr, None) or default

    store = open_store(
        setting(store_url, "SLUICE_RUN_STORE", "run_store", None, str), server.data_dir
    )
    return RunManager(
        store,
        service_executor(service),
        max_concurrent_runs=setting(
            max_concurrent_runs, "SLUICE_MAX_CONCURRENT_RUNS", "max_concurrent_runs", 4
        ),
        max_queued_runs=setting(max_queued_runs, "SLUICE_MAX_QUEUED_RUNS", "max_queued_runs", 100),
        grace_secs=setting(None, "SLUICE_RUN_GRACE_SECS", "run_grace_seconds", 30.0, float),
        key_ttl_secs=setting(
            None, "SLUICE_IDEMPOTENCY_TTL_SECS", "idempotency_ttl_seconds", 86_400.0, float
        ),
        stale_secs=setting(None, "SLUICE_RUN_STALE_SECS", "run_stale_seconds", 15.0, float),
        log_capacity=setting(None, "SLUICE_RUN_LOG_LINES", "run_log_lines", 1_000),
        hooks=m.RunMetrics(),
    )
