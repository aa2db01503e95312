"""PyMongo errors -> connector errors (no driver exception reaches the engine).

Time limits (`ExecutionTimeout`, code 50 MaxTimeMSExpired / 262 ExceededTimeLimit, a network
timeout, any error PyMongo flags as a timeout) are QueryTimedOut; a lost connection or no
server is ConnectorUnavailable; a command the server refused (an unknown operator, a bad
value, a duplicate key: `OperationFailure`, write errors) is QueryRejected, a 400 with its
`errmsg` and code, since the query is wrong, not the server; anything else is QueryFailed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    CursorNotFound,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    WriteError,
)

from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut

_TIMEOUT_CODES = frozenset({50, 262})  # MaxTimeMSExpired, ExceededTimeLimit


def reason(exc: PyMongoError) -> str:
    """The server's own message, without PyMongo's `full error` dump."""
    details = getattr(exc, "details", None)
    if isinstance(details, Mapping) and details.get("errmsg"):
        return str(details["errmsg"])
    return str(exc).split(", full error:", 1)[0]


def mapped(db: str, exc: PyMongoError, seconds: float) -> Exception:
    """One PyMongo error -> QueryTimedOut / ConnectorUnavailable / QueryFailed."""
    if isinstance(exc, ExecutionTimeout | NetworkTimeout) or getattr(exc, "timeout", False):
        return QueryTimedOut(db, seconds)
    if isinstance(exc, OperationFailure) and exc.code in _TIMEOUT_CODES:
        return QueryTimedOut(db, seconds)
    if isinstance(exc, CursorNotFound):
        return QueryFailed(db, f"the server lost the cursor mid-stream: {reason(exc)}")
    if isinstance(exc, ConnectionFailure):
        return ConnectorUnavailable(db, f"connection lost: {reason(exc)}")
    if isinstance(exc, BulkWriteError):
        first = (exc.details.get("writeErrors") or [{}])[0]
        return QueryRejected(
            db, f"write failed: {first.get('errmsg', exc)}", sqlstate=_code(first.get("code"))
        )
    if isinstance(exc, WriteError | OperationFailure):
        return QueryRejected(db, reason(exc), sqlstate=_code(exc.code))
    return QueryFailed(db, str(exc))


def _code(code: object) -> str | None:
    """MongoDB's numeric error code, kept in the envelope's details as `sqlstate`."""
    return None if code is None else f"MongoDB {code}"
