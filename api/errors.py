"""The one place that turns an exception into its HTTP answer: a SluiceError carries its own
status, details and headers (each error class declares them); anything else is a 500 with
no trace leaked."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from api.envelopes import BlockedError, ErrorBody, ErrorEnvelope, QueryBlocked
from api.service import SafetyBlocked
from connectors.errors import SluiceError

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
        super().__init__(message, suggestion=suggestion, details=details, headers=headers)
        self.status = status
        self.code = code


def status_for(exc: BaseException) -> int:
    """Every SluiceError carries its status; anything else is a 500."""
    return exc.status if isinstance(exc, SluiceError) else 500


def envelope_for(
    exc: BaseException, request_id: str
) -> tuple[int, ErrorEnvelope | QueryBlocked, dict[str, str] | None]:
    """The status, JSON envelope and extra headers for any exception; unexpected ones never
    leak a trace. A safety block has its own envelope (`status: blocked`)."""
    status = status_for(exc)
    if isinstance(exc, SafetyBlocked):
        b = exc.block
        blocked = QueryBlocked(
            request_id=request_id,
            status="blocked",
            error=BlockedError(stage=b.stage, reason=b.reason, suggestion=b.suggestion),
        )
        return status, blocked, exc.headers or None
    if isinstance(exc, SluiceError):
        body = ErrorBody(
            code=exc.code, message=exc.message, suggestion=exc.suggestion, details=exc.details
        )
        return (
            status,
            ErrorEnvelope(request_id=request_id, status="error", error=body),
            (exc.headers or None),
        )
    if isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
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
    return status, ErrorEnvelope(request_id=request_id, status="error", error=body), None


def _body_message(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return f"malformed JSON body: {text}"
    # msgspec: "Object missing required field `query`" / "Expected `str`, got `int` - at `$.x`"
    return f"invalid request body: {text}"
