"""Bodies and envelopes of the run control plane (reference/runs-api.txt)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from api.envelopes import Body
from engine.run_records import (
    RunRecord,
    RunStatus,
    StepState,
    client_key,
)

STATUSES: tuple[str, ...] = tuple(RunStatus)


# -- bodies and envelopes ---------------------------------------------------------------------
class RunSubmit(Body):
    config: str | dict[str, Any]
    config_format: Literal["yaml", "json"] = "yaml"
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_secs: Annotated[float, msgspec.Meta(gt=0)] | None = None
    doctor_first: bool = False
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


class RunAccepted(msgspec.Struct, kw_only=True):
    run_id: str
    status: str
    submitted_at: str


class RunErrorView(msgspec.Struct, kw_only=True):
    code: str
    message: str
    reason: str | None


class RunView(msgspec.Struct, kw_only=True):
    run_id: str
    name: str | None
    labels: dict[str, str]
    status: str
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    elapsed_secs: float | None
    records_written: int
    steps: list[StepState]  # the stored step states, as they are
    error: RunErrorView | None
    idempotency_key: str | None
    doctor_report: list[dict[str, Any]] | None
    timeout_secs: float | None
    result: str | None  # where a completed run's rows are paged


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunView]
    next_cursor: str | None


_BODY_FIELDS = frozenset(RunSubmit.__struct_fields__)
_DECODE = msgspec.json.Decoder()


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def view(run: RunRecord) -> RunView:
    elapsed = None
    if run.started_at is not None:
        elapsed = round((run.finished_at or time.time()) - run.started_at, 3)
    return RunView(
        run_id=run.run_id,
        name=run.name,
        labels=run.labels,
        status=run.status,
        submitted_at=rfc3339(run.submitted_at) or "",
        started_at=rfc3339(run.started_at),
        finished_at=rfc3339(run.finished_at),
        elapsed_secs=elapsed,
        records_written=run.records_written,
        steps=list(run.steps),
        error=None
        if run.error is None
        else RunErrorView(code=run.error.code, message=run.error.message, reason=run.error.reason),
        idempotency_key=None if run.idempotency_key is None else client_key(run.idempotency_key),
        doctor_report=run.doctor_report,
        timeout_secs=run.timeout_secs,
        result=f"/v1/results/{run.run_id}" if run.status == RunStatus.COMPLETED else None,
    )
