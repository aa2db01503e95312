"""One parse per (dialect, text): sqlglot's AST, shared read-only by every stage.

EXPLAIN is peeled off before parsing (sqlglot keeps it as an opaque Command in most
dialects) so the inner statement is analysed like any other; what it means for the
operation (a read, or the inner statement under ANALYZE) is decided in `sql_access`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from safety.text_cache import text_cache

# EXPLAIN with its option words; anything else after EXPLAIN is left to the parser.
_EXPLAIN = re.compile(
    r"^\s*EXPLAIN(?:\s+QUERY\s+PLAN|\s+ANALY[SZ]E|\s+VERBOSE|\s+EXTENDED|\s*\([^()]*\))*\s+",
    re.IGNORECASE,
)


class _QuietFallback(logging.Filter):
    """sqlglot logs a warning for every statement it keeps as an opaque Command (DO, CALL,
    VACUUM...); AST_CHECKER refuses those with a clear reason, so hostile input must not
    flood the server log with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_QuietFallback())

# Words whose presence explains a MySQL parse failure better than the parser does.
_MYSQL_FILE_WORDS = ("OUTFILE", "DUMPFILE", "INFILE", "LOAD DATA", "LOAD XML")


@dataclass(frozen=True, slots=True)
class Parsed:
    """The single statement (or why there is none). `tree` is shared: never mutate it."""

    statements: tuple[exp.Expression, ...]
    error: str | None = None
    explain: str | None = None  # the EXPLAIN prefix as written, e.g. "EXPLAIN ANALYZE "
    comments: tuple[str, ...] = ()  # every comment, in order
    trailing_comment: str | None = None

    @property
    def tree(self) -> exp.Expression | None:
        return self.statements[0] if len(self.statements) == 1 else None

    @property
    def explain_analyze(self) -> bool:
        return self.explain is not None and "ANALY" in self.explain.upper()


@text_cache
def parse(dialect: str, text: str) -> Parsed:
    """Parse `text` once; a parse failure keeps sqlglot's line and column in `error`."""
    explain = None
    body = text
    m = _EXPLAIN.match(text)
    if m is not None:
        explain, body = m.group(0).strip() + " ", text[m.end() :]
    try:
        tokens = sqlglot.tokenize(body, read=dialect)
    except (TokenError, RecursionError) as err:
        return Parsed((), error=f"SQL does not tokenize: {err}", explain=explain)
    comments = tuple(c for tok in tokens for c in tok.comments)
    trailing = tokens[-1].comments[-1] if tokens and tokens[-1].comments else None
    try:
        statements = tuple(s for s in sqlglot.parse(body, read=dialect) if s is not None)
    except ParseError as err:
        return Parsed(
            (),
            error=_parse_error(dialect, body, err),
            explain=explain,
            comments=comments,
            trailing_comment=trailing,
        )
    except RecursionError:
        return Parsed((), error="SQL is nested too deeply to analyse", explain=explain)
    return Parsed(statements, explain=explain, comments=comments, trailing_comment=trailing)


def _parse_error(dialect: str, body: str, err: ParseError) -> str:
    upper = " ".join(body.upper().split())
    if dialect == "mysql":
        for word in _MYSQL_FILE_WORDS:
            if word in upper:
                return (
                    f"{word} reads or writes files on the database server; it is never "
                    "allowed through sluice"
                )
    detail = err.errors[0] if err.errors else {}
    where = ""
    if detail.get("line") is not None:
        where = f" at line {detail['line']}, column {detail['col']}"
    message = _readable(detail.get("description") or str(err).splitlines()[0])
    near = (detail.get("highlight") or "").strip()
    context = f" near {near!r}" if near else ""
    return f"SQL syntax error{where}{context}: {message}"


_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*?(\w+)'>")


def _readable(description: str) -> str:
    """sqlglot's description without its internals ("Required keyword: 'expression' missing
    for <class 'sqlglot.expressions.core.Mul'>" -> "incomplete Mul expression")."""
    m = _MISSING.search(description)
    if m is not None:
        what = _NODES.get(m.group(2), "an expression")
        return f"{what} is incomplete (an operand or keyword is missing before this point)"
    return re.sub(r"<class '[^']*'>", "the statement", description)


_NODES = {
    "Mul": "a multiplication (*)",
    "Div": "a division (/)",
    "Add": "an addition (+)",
    "Sub": "a subtraction (-)",
    "Where": "the WHERE clause",
    "Having": "the HAVING clause",
    "EQ": "a comparison (=)",
    "And": "an AND",
    "Or": "an OR",
    "Select": "the SELECT",
    "From": "the FROM clause",
}
