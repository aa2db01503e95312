"""Errors of the engine: config, requests, steps, merges and results."""

from __future__ import annotations

from connectors.errors import SluiceError


class ConfigError(SluiceError, ValueError):
    """Raised when sluice.yaml cannot be read or validated; lists every problem found."""

    code = "invalid_config"
    status = 400

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid configuration\n{lines}")


class UnknownDatabase(SluiceError, LookupError):
    """Raised when a request names a database that is not configured."""

    code = "unknown_database"
    status = 404

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
    status = 404

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
    status = 503


class InvalidRequest(SluiceError, ValueError):
    """Raised for a well-formed body whose content is not valid (bad language, bad DAG)."""

    code = "invalid_request"
    status = 400


class ResultNotFound(SluiceError, LookupError):
    """Raised when a stored result is unknown or has expired."""

    code = "result_not_found"
    status = 404

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"no stored result for {request_id!r}: it never existed or has expired",
            suggestion="results are kept for server.result_ttl_seconds; run the query again",
        )


class InvalidQuery(InvalidRequest):
    """Raised when a federated request's DAG is invalid (cycle, duplicate or unknown step,
    ambiguous link, a merge naming an unknown step); the message names the step."""

    code = "invalid_query"

    def __init__(
        self, message: str, *, step_id: str | None = None, suggestion: str | None = None
    ) -> None:
        super().__init__(message, suggestion=suggestion)
        self.step_id = step_id


class MergeBlocked(InvalidRequest):
    """Raised when the merge SQL does something other than read the step tables (a file
    reader, a table function, PRAGMA/ATTACH/COPY/SET/INSTALL/LOAD/CALL, several statements)."""

    code = "merge_blocked"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"merge blocked: {reason}",
            suggestion="a merge is one SELECT (or WITH/UNION) over the step tables only",
        )
        self.reason = reason


class MergeFailed(SluiceError):
    """Raised when DuckDB rejected or failed the merge SQL; carries DuckDB's message."""

    code = "merge_failed"

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"merge failed in DuckDB: {detail}",
            suggestion="the step tables are named by step_id; check the merge SQL",
        )
        self.detail = detail


class StepFailed(SluiceError):
    """Raised when one step of a federated request failed; the other steps were cancelled.
    `cause` is the connector's error (QueryFailed, QueryTimedOut, ...), message included."""

    code = "step_failed"

    def __init__(self, step_id: str, database: str, cause: BaseException) -> None:
        detail = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        super().__init__(
            f"step {step_id!r} on database {database!r} failed: {detail}",
            suggestion=getattr(cause, "suggestion", None),
        )
        self.step_id = step_id
        self.database = database
        self.cause = cause
        # a step's failure keeps its cause's status: a rejected statement 400, timeout 504,
        # unreachable 503; anything else is the server's 500
        status = cause.status if isinstance(cause, SluiceError) else 500
        self.status = status if status == 400 else max(500, status)
        self.details = {
            "step_id": step_id,
            "database": database,
            "cause": getattr(cause, "code", type(cause).__name__),
            **(getattr(cause, "details", None) or {}),
        }


class ResultTruncated(SluiceError):
    """Raised when a step of an export or a run hit its row cap: the result would be
    incomplete, and nobody asked to accept that."""

    code = "result_truncated"
    status = 422

    def __init__(self, steps: list[str], cap: int, bound: int) -> None:
        which = ", ".join(repr(s) for s in steps)
        more = f"raise max_rows (up to {bound:,}, safety.max_export_rows), " if cap < bound else ""
        super().__init__(
            f"step {which} returned more than {cap:,} rows, the row cap of this export; "
            "the result would be incomplete, so nothing was written",
            suggestion=f"{more}filter or aggregate in the step query, or set "
            "allow_truncation: true (--allow-truncation) to keep the first rows",
        )
        self.details = {"steps": steps, "max_rows": cap, "bound": bound}


class StepUnknownDatabase(UnknownDatabase):
    """Raised when a federated step names a database that is not configured (404)."""

    def __init__(self, step_id: str, name: str, known: list[str]) -> None:
        super().__init__(name, known)
        self.step_id = step_id
        self.message = f"step {step_id!r}: {self.message}"
        self.args = (self.message,)


class TooDeeplyNested(InvalidRequest):
    """Raised when a body or a document nests deeper than limits.max_body_nesting."""

    code = "too_deeply_nested"

    def __init__(self, what: str, limit: int, depth: int | None = None) -> None:
        found = f"{depth} levels" if depth is not None else "too many levels to parse"
        super().__init__(
            f"{what} nests {found}; at most {limit} (limits.max_body_nesting) are accepted",
            suggestion="flatten the document, or raise limits.max_body_nesting",
        )


class ResultTooLarge(SluiceError):
    """Raised while a result is written, once it passes its byte bound; nothing is kept."""

    code = "result_too_large"
    status = 413

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            f"the result passed {limit} bytes ({setting}); writing stopped and nothing was kept",
            suggestion="select fewer rows or columns (LIMIT, a narrower merge), or raise "
            f"{setting}",
        )
        self.limit = limit


class SpillLimitExceeded(SluiceError):
    """Raised when a request's spilled steps (or its merge's temp files) would pass the spill
    space left under limits.merge_temp_limit; its files are removed."""

    code = "spill_limit_exceeded"
    status = 507

    def __init__(self, limit: int, what: str, setting: str = "limits.merge_temp_limit") -> None:
        super().__init__(
            f"{what} needs more spill space than is left of {limit} bytes ({setting}); "
            "the request was stopped and its spill files removed",
            suggestion=f"select fewer rows or columns, retry when fewer large requests run, "
            f"or raise {setting}",
            details={"setting": setting, "limit_bytes": limit},
        )
        self.limit = limit


class RequestTimedOut(SluiceError):
    """Raised when a whole request (every phase: waits, steps, merge, storing) passed its
    time bound; whatever was running was stopped."""

    code = "request_timeout"
    status = 504

    def __init__(self, seconds: float, setting: str = "query_timeout_seconds") -> None:
        super().__init__(
            f"the request ran past its bound of {seconds:g}s ({setting} covers the whole "
            "request, merge included) and was stopped",
            suggestion=f"narrow the query (filters, LIMIT, a smaller merge) or raise {setting}",
        )
        self.seconds = seconds


class MergeReadsStripped(InvalidRequest):
    """Raised when the merge reads a step that the safety policy stripped (PARTIAL)."""

    code = "merge_reads_stripped_step"

    def __init__(self, step_id: str) -> None:
        super().__init__(
            f"the merge reads step {step_id!r}, which was stripped by the safety policy",
            suggestion=f"drop {step_id!r} from the merge, or ask for read access to its table",
        )
        self.step_id = step_id


class InlineTooLarge(SluiceError):
    """Raised when a simple query's answer would encode past limits.max_inline_bytes."""

    code = "answer_too_large"
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the answer passed {limit} bytes (limits.max_inline_bytes) and was stopped",
            suggestion="add a tighter filter or LIMIT, or send the query as a one-step "
            "POST /v1/query: its result is stored and paged through GET /v1/results/{id}",
        )
        self.limit = limit


class StepUnknownTable(UnknownTable):
    """Raised when a federated step names a table its database does not have (404)."""

    def __init__(self, step_id: str, database: str, table: str, known: list[str]) -> None:
        super().__init__(database, table, known)
        self.step_id = step_id
        self.message = f"step {step_id!r}: {self.message}"
        self.args = (self.message,)


class ServerBusy(SluiceError):
    """Raised when the process is at a bound shared by every request (503, Retry-After)."""

    code = "server_busy"
    status = 503
    retry_after = 1

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            suggestion="retry after 1s, or raise the bound it names",
            headers={"Retry-After": str(self.retry_after)},
        )


class ParseTooCostly(InvalidRequest):
    """Raised when a document took longer than limits.parse_timeout_seconds to parse."""

    code = "document_too_costly"

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(
            f"{what} took more than {seconds:g}s to parse (limits.parse_timeout_seconds) "
            "and was refused",
            suggestion="send the config as JSON (config_format: json, or a JSON object), "
            "or make it smaller",
        )


class MergeNotPortable(InvalidQuery):
    """Raised when a merge for Spark uses a construct Spark cannot run, or would run with a
    different answer than DuckDB (engine/spark_sql.py names each and what to write)."""

    code = "merge_not_portable"

    def __init__(self, construct: str, why: str, instead: str, *, silent: bool) -> None:
        kind = "would answer differently on Spark" if silent else "cannot run on Spark"
        super().__init__(f"the merge uses {construct}, which {kind}: {why}", suggestion=instead)
        self.details = {"construct": construct, "engine": "spark", "silent_difference": silent}


class SparkUnavailable(SluiceError):
    """Raised when the configured Spark Connect server cannot be reached or fails a merge
    for a reason not the query's."""

    code = "spark_unavailable"
    status = 503


class SparkMergeFailed(SluiceError):
    """Raised when Spark failed the merge while it ran (a value it refused, say); carries
    Spark's message."""

    code = "merge_failed"

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"merge failed on Spark: {detail}",
            suggestion="the step tables are named by step_id; check the merge SQL",
        )
        self.detail = detail


class ResultStoreUnavailable(SluiceError):
    """Raised when the shared result store (its bucket or its index) cannot be reached."""

    code = "result_store_unavailable"
    status = 503

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(
            f"the result store's {what} cannot be reached: {type(exc).__name__}: {exc}",
            suggestion="retry in a few seconds; if it persists, check the `results` settings",
            headers={"Retry-After": "5"},
        )
