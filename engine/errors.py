"""Errors of the engine: config, requests, steps, merges and results."""

from __future__ import annotations

from sluice.errors import SluiceError


class ConfigError(SluiceError, ValueError):
    """Raised when sluice.yaml cannot be read or validated; lists every problem found."""

    code = "invalid_config"

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid configuration\n{lines}")


class UnknownDatabase(SluiceError, LookupError):
    """Raised when a request names a database that is not configured."""

    code = "unknown_database"

    def __init__(self, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(
            f"database {name!r} is not configured",
            suggestion=f"{hint}configured databases: {', '.join(sorted(known)) or '(none)'}",
        )
        self.name = name


class UnknownTable(SluiceError, LookupError):
    """Raised when a table is not in the database's discovered schema."""

    code = "unknown_table"

    def __init__(self, database: str, table: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(table, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(
            f"table {table!r} not found in database {database!r}",
            suggestion=f"{hint}GET /v1/databases lists the discovered tables",
        )


class DatabaseUnreachable(SluiceError):
    """Raised when a request needs a database that was unreachable at its last probe."""

    code = "database_unavailable"


class InvalidRequest(SluiceError, ValueError):
    """Raised for a well-formed body whose content is not valid (bad language, bad DAG)."""

    code = "invalid_request"


class ResultNotFound(SluiceError, LookupError):
    """Raised when a stored result is unknown or has expired."""

    code = "result_not_found"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"no stored result for {request_id!r}: it never existed or has expired",
            suggestion="results are kept for server.result_ttl_seconds; run the query again",
        )
