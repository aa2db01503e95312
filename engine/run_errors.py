"""The errors of the runs code, each with its HTTP status: admission refusals (a full queue,
a draining server, a reused idempotency key), unknown or unfinished runs, a foreign cursor."""

from __future__ import annotations

from connectors.errors import SluiceError
from engine.run_records import client_key


class QueueFull(SluiceError):
    """Raised when a submit finds the run queue at its bound (HTTP 429 with Retry-After)."""

    code = "queue_full"
    status = 429

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the run queue is full ({queued} queued, limit {limit})",
            suggestion=f"retry after {retry_after}s, or raise --max-queued-runs",
            details={"queued": queued, "max_queued_runs": limit},
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class NotAccepting(SluiceError):
    """Raised when a submit arrives while the server drains for shutdown (HTTP 503)."""

    code = "shutting_down"
    status = 503

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down and accepts no new runs",
            suggestion="submit again to another server or after the restart",
            headers={"Retry-After": "5"},
        )


class RunNotFound(SluiceError, LookupError):
    """Raised when a run_id is unknown (never existed or was deleted)."""

    code = "run_not_found"
    status = 404

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}", suggestion="GET /v1/runs lists the known runs")


class RunNotTerminal(SluiceError):
    """Raised when DELETE targets a run that is still queued or running (HTTP 409)."""

    code = "run_not_terminal"
    status = 409

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id} is {status}; only finished runs can be deleted",
            suggestion=f"POST /v1/runs/{run_id}/cancel first",
        )


class IdempotencyConflict(SluiceError):
    """Raised when an idempotency key is reused with a different payload (HTTP 409)."""

    code = "idempotency_conflict"
    status = 409

    def __init__(self, key: str, run_id: str) -> None:
        key = client_key(key)
        super().__init__(
            f"idempotency key {key!r} was already used by run {run_id} with a different payload",
            suggestion="use a new idempotency_key, or resend exactly the original request",
        )
        self.details = {"idempotency_key": key, "run_id": run_id}


class InvalidCursor(SluiceError, ValueError):
    """Raised when a list cursor was not produced by this server."""

    code = "invalid_cursor"
    status = 400
