"""Field distributions computed over a bounded sample, for embedded databases that keep no
statistics of their own (SQLite, DuckDB): one aggregate query per table plus one small
DISTINCT per column. Each database passes its own spelling of the aggregates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import Distribution, StatSource
from connectors.types_map import json_safe, json_safe_list

SAMPLE_ROWS = 100_000

# Templates over a quoted column `{c}`: distinct count, NULL count, min, max, sample value.
Spelling = tuple[str, str, str, str, str]


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def sampled_distributions(
    execute: Callable[[str], Any],
    table_sql: str,
    cols: Sequence[str],
    spelling: Spelling,
    *,
    distinct_exact: bool = True,
) -> dict[str, Distribution]:
    """`execute(sql)` returns a cursor; `table_sql` is the quoted (qualified) table name.
    Figures are exact when the whole table fit in the sample (and, for distinct counts,
    when the spelling counts exactly: `distinct_exact`)."""
    if not cols:
        return {}
    distinct, nulls, lo, hi, value = spelling
    sample = f"(SELECT * FROM {table_sql} LIMIT {SAMPLE_ROWS})"
    parts = ["count(*)"]
    for c in map(quote, cols):
        parts += [t.format(c=c) for t in (distinct, nulls, lo, hi)]
    row = execute(f"SELECT {', '.join(parts)} FROM {sample}").fetchone()
    total = row[0] or 0
    whole = total < SAMPLE_ROWS  # the sample read the whole table
    scope = "the whole table" if whole else f"the first {SAMPLE_ROWS:,} rows"
    sources = {
        "distinct_count": StatSource(
            f"count of distinct values over {scope}" + ("" if distinct_exact else " (HyperLogLog)"),
            exact=whole and distinct_exact,
        ),
        "null_fraction": StatSource(f"NULLs over {scope}", exact=whole),
        "sample_values": StatSource(f"distinct values from {scope}", exact=True),
        "min_value": StatSource(f"min() over {scope}", exact=whole),
        "max_value": StatSource(f"max() over {scope}", exact=whole),
    }
    out = {}
    for i, name in enumerate(cols):
        n_distinct, n_nulls, low, high = row[1 + 4 * i : 5 + 4 * i]
        c = quote(name)
        samples = execute(
            f"SELECT DISTINCT {value.format(c=c)} FROM {sample} WHERE {c} IS NOT NULL LIMIT 5"
        ).fetchall()
        out[name] = Distribution(
            distinct_count=n_distinct,
            null_fraction=(n_nulls or 0) / total if total else 0.0,
            sample_values=json_safe_list([s[0] for s in samples]),
            min_value=json_safe(low),
            max_value=json_safe(high),
            sources=dict(sources),
        )
    return out
