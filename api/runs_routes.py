"""The run control plane's HTTP handlers (reference/runs-api.txt).

`RUN_ENDPOINTS` (/v1/runs...) is the Endpoint list for the route table. The runs code is
split by concern: admission of a submitted run (api/run_admission.py: parsing, validation,
safety verdicts, database pings, answered synchronously), execution (api/run_execution.py:
a run goes through `QueryService.federated` with the run id as the result id, so
`/v1/results/{run_id}` pages it and `/v1/runs/{id}/result` downloads it), queueing and
lifecycle (engine/runs.py, composing engine/run_admission.py, run_execution.py and
run_upkeep.py) and durability (engine/run_store.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.downloads import FORMAT_HELP, download, format_param
from api.errors import ApiError
from api.routes import (
    Endpoint,
    audit_admin_access,
    int_param,
    json_endpoint,
    reader_of,
    request_context,
)
from api.run_admission import parse_config, submit, to_query
from api.sse import sse_response
from connectors.errors import SluiceError
from engine.bounds import check_nesting, parse_bounded
from engine.errors import InvalidRequest
from engine.ir import FederatedQuery
from engine.offload import off_loop
from engine.results import Reader
from engine.run_errors import RunNotFound
from engine.run_records import RunRecord, RunStatus
from engine.run_store import encode_cursor
from engine.runs import RunManager

if TYPE_CHECKING:
    from api.service import QueryService

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
    if record.status != RunStatus.COMPLETED:
        raise ApiError(
            409,
            "run_not_completed",
            f"run {record.run_id} is {record.status}",
            suggestion="wait for status completed (GET /v1/runs/{id})",
        )
    store = request.app.state.service.store
    return await download(store, record.run_id, fmt, reader_of(request), record.name)


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
