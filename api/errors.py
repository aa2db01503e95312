"""The only place that knows HTTP statuses: exception class -> (status, envelope), found by
walking the exception's MRO over one table (as starlette's _exception_handler does)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from api.envelopes import ErrorBody, ErrorEnvelope
from connectors.errors import (
    ConnectorError,
    ConnectorUnavailable,
    QueryFailed,
    QueryTimedOut,
    SluiceError,
)
from engine import errors as engine_errors
from engine.errors import (
    ConfigError,
    DatabaseUnreachable,
    InvalidRequest,
    ResultNotFound,
    UnknownDatabase,
    UnknownTable,
)

log = logging.getLogger("sluice.api")


class ApiError(SluiceError):
    """An error raised by the HTTP layer itself, with its own status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        suggestion: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, suggestion=suggestion)
        self.status = status
        self.code = code
        self.details = details
        self.headers = headers or {}


STATUS: dict[type[BaseException], int] = {
    InvalidRequest: 400,
    ConfigError: 400,
    UnknownDatabase: 404,
    UnknownTable: 404,
    ResultNotFound: 404,
    DatabaseUnreachable: 503,
    QueryTimedOut: 504,
    ConnectorUnavailable: 503,
    QueryFailed: 500,
    ConnectorError: 500,
    SluiceError: 500,
}

# the federated engine adds these; looked up by name so the table stays in one place
for _name, _status in (
    ("StepFailed", 500),
    ("MergeFailed", 500),
    ("MergeBlocked", 400),
    ("InvalidQuery", 400),
    ("ResultTooLarge", 413),
    ("InlineTooLarge", 413),
    ("ServerBusy", 503),
    ("RequestTimedOut", 504),
):
    _cls = getattr(engine_errors, _name, None)
    if isinstance(_cls, type):
        STATUS[_cls] = _status


def status_for(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, engine_errors.StepFailed):
        # a step's failure keeps its cause's server-side status: timeout 504, unreachable 503
        return max(500, status_for(exc.cause))
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def envelope_for(exc: BaseException, request_id: str) -> tuple[int, ErrorEnvelope]:
    """The status and JSON envelope for any exception; unexpected ones never leak a trace."""
    status = status_for(exc)
    if isinstance(exc, SluiceError):
        body = ErrorBody(
            code=exc.code,
            message=exc.message,
            suggestion=exc.suggestion,
            details=getattr(exc, "details", None),
        )
    elif isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
        status = 400
        body = ErrorBody(
            code="invalid_body",
            message=_body_message(exc),
            suggestion="see /openapi.json for the request schema",
        )
    else:
        log.exception("unexpected error in request %s", request_id, exc_info=exc)
        body = ErrorBody(
            code="internal_error",
            message=f"internal error ({type(exc).__name__}); see the server log "
            f"for request {request_id}",
        )
    return status, ErrorEnvelope(request_id=request_id, status="error", error=body)


def _body_message(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return f"malformed JSON body: {text}"
    # msgspec: "Object missing required field `query`" / "Expected `str`, got `int` - at `$.x`"
    return f"invalid request body: {text}"
