"""The root of every sluice exception, and the errors raised by connectors.

`SluiceError` lives here, in the bottom layer, so every package can derive from it. No driver
exception crosses into engine/; each is mapped here.
"""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Base class of all errors sluice raises on purpose; each class says how it is answered.

    `code` is a stable machine-readable name that the API puts in its error envelope,
    `status` the HTTP status, `suggestion` what to do about it, `details` structured facts
    for the envelope and `headers` extra response headers (Retry-After). The API turns any
    SluiceError into its envelope in one place (api/errors.py) from these alone.
    """

    code: str = "error"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        suggestion: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})


class ConnectorError(SluiceError):
    """Base of every connector failure (the database said no, or could not be reached)."""

    code = "connector_error"

    def __init__(self, database: str, message: str, *, suggestion: str | None = None) -> None:
        super().__init__(f"{database}: {message}", suggestion=suggestion)
        self.database = database
        self.detail = message


class ConnectorUnavailable(ConnectorError):
    """Raised when the database cannot be reached (connect refused, DNS, auth, pool closed)."""

    code = "database_unavailable"
    status = 503


class QueryFailed(ConnectorError):
    """Raised when the database rejected or aborted a statement; message is the database's."""

    code = "query_failed"


# SQLSTATE classes (SQL standard) that say the statement itself is wrong: data exception,
# integrity constraint, syntax error or access rule (unknown column/table/function), feature
# not supported. Anything else (resources, operator intervention, internal) is the server's.
_REJECTED_CLASSES = frozenset({"22", "23", "42", "0A"})


def statement_at_fault(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and sqlstate[:2] in _REJECTED_CLASSES


class QueryRejected(QueryFailed):
    """Raised when the database refused the statement itself (a syntax error, an unknown
    column or table, a type mismatch, a constraint): the query is wrong, not the server, so
    it is a 400 that keeps the database's own message, detail and hint."""

    code = "query_rejected"
    status = 400

    def __init__(
        self,
        database: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(database, message, suggestion=hint or "fix the query and send it again")
        found = {"detail": detail, "hint": hint, "sqlstate": sqlstate}
        self.details = {k: v for k, v in found.items() if v} or None


class QueryTimedOut(ConnectorError):
    """Raised when a statement ran past its timeout and was stopped on the server."""

    code = "query_timeout"
    status = 504

    def __init__(self, database: str, seconds: float) -> None:
        super().__init__(
            database,
            f"query ran past its timeout of {seconds:g}s and was cancelled on the server",
            suggestion="narrow the query (filters, LIMIT) or raise query_timeout_seconds",
        )
        self.seconds = seconds


class UnknownConnector(SluiceError, LookupError):
    """Raised when a config names a database type with no registered connector."""

    code = "unknown_connector"
