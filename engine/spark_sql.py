"""A DuckDB merge made Spark SQL: refused where the two engines would answer differently.

sqlglot transpiles DuckDB to Spark SQL, but measured on typical merges some constructs fail
on Spark and, worse, some run there with a different answer and no warning at all: a cast of
5.5 to INTEGER rounds in DuckDB and truncates in Spark, `dayofweek` counts from 0 in one and
1 in the other, `epoch()` keeps fractions in one only, `dayname` is 'Monday' or 'Mon', an
ordered `array_agg` loses its order. `findings` walks the merge's DuckDB AST (with the step
tables' column types, when known, so a cast's operand type is known) and names each such
construct with what to write instead; `to_spark` rewrites the step tables to the request's
Spark views and transpiles, refusing anything sqlglot cannot express.

The rules are the corpus's findings (tests/engine/spark_corpus.yaml runs every case on both
engines): a construct found to differ silently is added here, never left to chance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify as qualify_columns

from engine.errors import MergeNotPortable

SOURCE = "duckdb"  # the merge's dialect (engine.merge parses it so)
TARGET = "spark"

_T = exp.DataType.Type
_INTEGER_TYPES = frozenset(exp.DataType.INTEGER_TYPES) - {_T.BIT}
_FRACTIONAL = frozenset({_T.FLOAT, _T.DOUBLE, _T.DECIMAL, _T.BIGDECIMAL, _T.UNKNOWN})
# an operand already without a fraction: the cast cannot round or truncate anything
_WHOLE = (exp.Floor, exp.Ceil)
_ROUNDED = (exp.Round, exp.Trunc)  # whole unless given decimals
_TEXT = frozenset({_T.TEXT, _T.VARCHAR, _T.CHAR, _T.NCHAR, _T.NVARCHAR})
_SAFE_DIFF_UNITS = {"day", "week"}


@dataclass(frozen=True)
class Finding:
    """A construct of the merge that Spark cannot run (`silent` False) or would run with a
    different answer (`silent` True), and what to write instead."""

    construct: str
    why: str
    instead: str
    silent: bool

    def error(self) -> MergeNotPortable:
        return MergeNotPortable(self.construct, self.why, self.instead, silent=self.silent)


Rule = Callable[[exp.Expression], Finding | None]

_DOW_PARTS = {"dow", "dayofweek", "weekday", "isodow", "dayofweekiso", "day_of_week"}
_EPOCH_PARTS = {"epoch"}
_DATE_PART_FUNCS = {"date_part", "datepart"}


def _sql(node: exp.Expression) -> str:
    text = node.sql(SOURCE)
    return text if len(text) <= 80 else text[:77] + "..."


def _part_name(node: exp.Expression) -> str | None:
    """The date part an EXTRACT or date_part() asks for, lowercase."""
    if isinstance(node, exp.Extract):
        return node.this.name.lower()
    if isinstance(node, exp.Anonymous) and node.name.lower() in _DATE_PART_FUNCS:
        first = node.expressions[0] if node.expressions else None
        return first.name.lower() if isinstance(first, exp.Literal | exp.Var) else None
    return None


def _day_of_week(node: exp.Expression) -> Finding | None:
    named = isinstance(node, exp.DayOfWeek | exp.DayOfWeekIso) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in {"weekday", "isodow"}
    )
    if named or _part_name(node) in _DOW_PARTS:
        return Finding(
            _sql(node),
            "day-of-week numbers differ: DuckDB counts Sunday as 0, Spark as 1, and the "
            "transpiled ISO day is wrong",
            "strftime(d, '%A') for the day's name, or compare dates instead of day numbers",
            silent=True,
        )
    return None


def _names(node: exp.Expression) -> Finding | None:
    if isinstance(node, exp.Dayname | exp.Monthname):
        full = "%A" if isinstance(node, exp.Dayname) else "%B"
        return Finding(
            _sql(node),
            "DuckDB gives the full name ('Monday'), Spark the abbreviation ('Mon')",
            f"strftime(d, '{full}'), which is the full name on both",
            silent=True,
        )
    return None


def _epoch(node: exp.Expression) -> Finding | None:
    if isinstance(node, exp.TimeToUnix) or _part_name(node) in _EPOCH_PARTS:
        return Finding(
            _sql(node),
            "DuckDB keeps the fraction of a second, Spark drops it",
            'compare timestamps directly, or run this merge on DuckDB ("engine": "duckdb")',
            silent=True,
        )
    if isinstance(node, exp.UnixToTime) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in {"epoch_us", "epoch_ns"}
    ):
        return Finding(
            _sql(node),
            "it has no Spark equivalent (sqlglot turns epoch_ms(ts) into a conversion the "
            "other way)",
            'compare timestamps directly, or run this merge on DuckDB ("engine": "duckdb")',
            silent=False,
        )
    return None


def _ordered_aggregate(node: exp.Expression) -> Finding | None:
    if isinstance(node, exp.ArrayAgg | exp.First | exp.Last) and isinstance(node.this, exp.Order):
        return Finding(
            _sql(node),
            "Spark's collect_list/first ignore the ORDER BY inside the aggregate, so the "
            "order is lost",
            "list_sort(array_agg(x)) when the order is by the value itself; otherwise run "
            'this merge on DuckDB ("engine": "duckdb")',
            silent=True,
        )
    return None


def _engine_specific(node: exp.Expression) -> Finding | None:
    if isinstance(node, exp.Anonymous) and node.name.lower() == "hash":
        return Finding(
            _sql(node),
            "the hash functions differ (DuckDB's own vs Spark's Murmur3): other numbers",
            "md5(x), which is the same on both",
            silent=True,
        )
    approx = isinstance(node, exp.ApproxDistinct | exp.ApproxQuantile) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "reservoir_quantile"
    )
    if approx:
        return Finding(
            _sql(node),
            "the engines approximate with different algorithms: other numbers",
            "the exact count(DISTINCT x) or quantile_cont(x, q)",
            silent=True,
        )
    return None


# strftime codes whose Spark translation gives the same text (the corpus checks each);
# %j is '007' in DuckDB and '07' in Spark, others fail on Spark or differ
_SAME_FORMAT_CODES = set("YmdHMSfAaBbyIp")
_SAME_FORMAT_TEXT = set("-/:., ")


def _time_format(node: exp.Expression) -> Finding | None:
    if not isinstance(node, exp.TimeToStr | exp.StrToTime):
        return None
    fmt = node.args.get("format")
    text = fmt.name if isinstance(fmt, exp.Literal) and fmt.is_string else None
    bad = None if text is not None else "a format that is not a literal"
    i = 0
    while bad is None and text is not None and i < len(text):
        if text[i] == "%":
            code = text[i + 1 : i + 2]
            if code not in _SAME_FORMAT_CODES:
                bad = f"the code %{code}"
            i += 2
        elif text[i] not in _SAME_FORMAT_TEXT:
            bad = f"the text {text[i]!r}"
        else:
            i += 1
    if bad is None:
        return None
    codes = " ".join(f"%{c}" for c in sorted(_SAME_FORMAT_CODES))
    return Finding(
        f"{_sql(node)} ({bad})",
        "Spark's datetime patterns differ from strftime's: some codes give other text "
        "(%j is '007' in DuckDB, '07' in Spark), others fail",
        f"only these codes, separated by - / : . , or spaces: {codes}",
        silent=True,
    )


def _text_functions(node: exp.Expression) -> Finding | None:
    if isinstance(node, exp.RegexpReplace):
        flags = node.args.get("modifiers")
        if not (isinstance(flags, exp.Literal) and flags.name == "g"):
            return Finding(
                _sql(node),
                "DuckDB replaces the first match unless given 'g'; Spark replaces every "
                "match (and ignores other flags)",
                "regexp_replace(s, pattern, replacement, 'g'): every match, on both",
                silent=True,
            )
    if isinstance(node, exp.Format) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "printf"
    ):
        return Finding(
            _sql(node),
            "DuckDB's format()/printf() templates mean something else to Spark "
            "(format('{}-{}', a, b) comes back as '{}-{}')",
            "concatenate: CAST(a AS VARCHAR) || '-' || b",
            silent=True,
        )
    return None


def _unsupported(node: exp.Expression) -> Finding | None:
    """Constructs that Spark refuses or sqlglot cannot express: named here so the answer
    says what to write, rather than Spark's parser error after the steps ran."""
    if isinstance(node, exp.Slice):
        what, instead = "a list slice", "slice(list, start, length) or list elements one by one"
    elif isinstance(node, exp.ToMap | exp.Map | exp.VarMap):
        what, instead = "a MAP literal", "a struct {'k': v} or a join"
    elif isinstance(node, exp.Columns):
        what, instead = "COLUMNS()", "the column names written out"
    elif isinstance(node, exp.Union | exp.Intersect | exp.Except) and node.args.get("by_name"):
        what, instead = "UNION BY NAME", "UNION with the same columns in the same order"
    elif isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() in {
        "ASOF",
        "POSITIONAL",
    }:
        what = f"{str(node.args['method']).upper()} JOIN"
        instead = "a plain join with a window (row_number) picking the matching row"
    elif isinstance(node, exp.Pivot):
        what, instead = "PIVOT/UNPIVOT", "conditional aggregates: sum(v) FILTER (WHERE k = 'a')"
    elif isinstance(node, exp.TableSample):
        what, instead = "USING SAMPLE", "a WHERE on a hash of a key (md5)"
    else:
        return None
    return Finding(
        f"{what}: {_sql(node)}",
        "Spark SQL cannot run it",
        instead,
        silent=False,
    )


def _kind(node: exp.Expression) -> object:
    """The node's annotated type (a DataType.Type), UNKNOWN when none."""
    return node.type.this if node.type is not None else _T.UNKNOWN


def _typed_as(node: exp.Expression) -> str:
    if node.type is None or _kind(node) == _T.UNKNOWN:
        return ""
    return f" (a {node.type.sql(SOURCE)})"


def _cast_to_integer(node: exp.Expression, certain_only: bool) -> Finding | None:
    """A cast of a value with a fraction to an integer type: DuckDB rounds, Spark truncates
    (a text '5.5' too: DuckDB gives 6)."""
    if not isinstance(node, exp.Cast) or node.to.this not in _INTEGER_TYPES:
        return None
    operand = node.this
    if isinstance(operand, _WHOLE):
        return None
    if isinstance(operand, _ROUNDED) and operand.args.get("decimals") is None:
        return None
    kind = _kind(operand)
    if kind == _T.UNKNOWN and certain_only:
        return None
    if kind not in _FRACTIONAL and kind not in _TEXT:
        return None
    return Finding(
        f"{_sql(node)}{_typed_as(operand)}",
        "a cast of a value with a fraction to an integer rounds in DuckDB (5.5 -> 6) and "
        "truncates in Spark (5.5 -> 5)",
        "say which you mean: CAST(round(x) AS INTEGER) or CAST(trunc(x) AS INTEGER)",
        silent=True,
    )


def _float_to_text(node: exp.Expression, certain_only: bool) -> Finding | None:
    """A DOUBLE written as text: '1.25e+20' in DuckDB, '1.25E20' in Spark."""
    if not isinstance(node, exp.Cast) or node.to.this not in _TEXT:
        return None
    kind = _kind(node.this)
    if kind in {_T.FLOAT, _T.DOUBLE} or (kind == _T.UNKNOWN and not certain_only):
        return Finding(
            f"{_sql(node)}{_typed_as(node.this)}",
            "floating-point numbers are written differently as text ('1.25e+20' in "
            "DuckDB, '1.25E20' in Spark)",
            "CAST(CAST(x AS DECIMAL(38, 9)) AS VARCHAR), which is the same on both",
            silent=True,
        )
    return None


def _date_diff(node: exp.Expression, certain_only: bool) -> Finding | None:
    """date_diff counts boundaries crossed in DuckDB and whole units elapsed in Spark: the
    same only for days and weeks between DATEs (measured by the corpus)."""
    if not isinstance(node, exp.DateDiff):
        return None
    given = node.args.get("unit")
    unit = (given.name if given is not None else "day").lower()
    if unit in _SAFE_DIFF_UNITS:
        kinds = {_kind(node.this), _kind(node.expression)}
        if kinds <= {_T.DATE} or (certain_only and _T.UNKNOWN in kinds):
            return None
    return Finding(
        _sql(node),
        "DuckDB counts the unit boundaries crossed, Spark the whole units elapsed "
        "(2023-12-31 23:00 to 2024-01-01 01:00 is 1 day in DuckDB, 0 in Spark)",
        "date_diff('day', CAST(a AS DATE), CAST(b AS DATE)), or run this merge on DuckDB "
        '("engine": "duckdb")',
        silent=True,
    )


TypedRule = Callable[[exp.Expression, bool], Finding | None]
TYPED_RULES: tuple[TypedRule, ...] = (_cast_to_integer, _float_to_text, _date_diff)


RULES: tuple[Rule, ...] = (
    _unsupported,
    _day_of_week,
    _names,
    _epoch,
    _ordered_aggregate,
    _engine_specific,
    _time_format,
    _text_functions,
)


def findings(
    tree: exp.Expression, types: Mapping[str, Mapping[str, str]] | None = None
) -> list[Finding]:
    """Every construct of the merge `tree` (DuckDB AST) that Spark cannot run or would
    answer differently. `types`: each step table's columns and DuckDB types, so a cast's
    operand has a known type; without them only literal operands are judged."""
    found: list[Finding] = []
    for node in tree.walk():
        for rule in RULES:
            hit = rule(node)
            if hit is not None:
                found.append(hit)
    found.extend(_typed_findings(tree, types))
    return found


def _typed_findings(
    tree: exp.Expression, types: Mapping[str, Mapping[str, str]] | None
) -> list[Finding]:
    """The rules that need types, on a typed copy of the tree. Without the step tables'
    types (before the steps ran) only what literals make certain is refused; with them, an
    operand whose type cannot be told is refused too."""
    if not any(isinstance(n, exp.Cast | exp.DateDiff) for n in tree.walk()):
        return []
    certain_only = types is None
    schema: dict[str, object] = {
        t.lower(): {c.lower(): ty for c, ty in cols.items()} for t, cols in (types or {}).items()
    }
    try:
        typed = tree.copy()
        if schema:
            typed = qualify_columns(
                typed, schema=schema, dialect=SOURCE, validate_qualify_columns=False
            )
        typed = annotate_types(typed, schema=schema or None, dialect=SOURCE)
    except (SqlglotError, KeyError, ValueError) as exc:
        if certain_only:
            return []
        return [
            Finding(
                _sql(tree),
                f"the types of its casts and date differences cannot be told ({exc})",
                'write the merge more plainly, or run it on DuckDB ("engine": "duckdb")',
                silent=True,
            )
        ]
    return [f for n in typed.walk() for rule in TYPED_RULES if (f := rule(n, certain_only))]


def check(tree: exp.Expression, types: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Raise MergeNotPortable (400) naming the first construct `findings` reports."""
    found = findings(tree, types)
    if found:
        raise found[0].error()


def to_spark(tree: exp.Expression, views: Mapping[str, str]) -> str:
    """Spark SQL of the checked merge, each step table read from its view in `views`
    (step_id -> view name; the step id stays the alias). Raises MergeNotPortable for what
    sqlglot cannot write in Spark SQL."""
    out = tree.copy()
    lowered = {k.lower(): v for k, v in views.items()}
    for table in out.find_all(exp.Table):
        view = lowered.get(table.name.lower())
        if view is None:
            continue  # a CTE
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
        table.set("this", exp.to_identifier(view))
    try:
        return out.sql(dialect=TARGET, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise MergeNotPortable(
            _sql(tree),
            f"sqlglot cannot write it as Spark SQL ({exc})",
            'a simpler merge, or run it on DuckDB ("engine": "duckdb")',
            silent=False,
        ) from exc
