"""The merge SQL, checked on its sqlglot AST before it runs in the shared DuckDB.

DuckDB is locked down (no file access, no extension loading, configuration locked), but the
sink holds every running request's tables, so a merge may read only its own step tables:
one SELECT (or WITH / UNION / INTERSECT / EXCEPT), plain table names that are step ids or
CTEs, no table functions, file readers, catalog functions or statements other than a query.
The check runs at validation time (400 before anything runs); `qualify` then rewrites each
step table to the request's schema, since `SET search_path` is refused on a locked config.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from engine.errors import InvalidQuery, MergeBlocked

# statements and clauses that do something other than read
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Merge,
    exp.Copy,
    exp.Command,
    exp.Pragma,
    exp.Set,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Into,
    exp.Describe,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.LoadData,
    exp.Summarize,
)

# function names (lowercase) that read files, settings or the catalog; prefixes end with _
_FORBIDDEN_FUNCTIONS = (
    "read_",
    "glob",
    "getenv",
    "query",
    "parquet_",
    "duckdb_",
    "pragma_",
    "sniff_",
    "current_setting",
    "which_secret",
    "iceberg_",
    "delta_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "json_execute_serialized_sql",
    "checkpoint",
    "force_checkpoint",
    "load_",
    "install_",
    "copy_",
)


@functools.lru_cache(maxsize=16)
def parse_merge(sql: str) -> exp.Expression:
    """The merge's single statement (DuckDB dialect). Raises InvalidQuery if it does not
    parse or holds several statements. Cached: validation, planning and the merge itself
    read the same text (callers never mutate the tree; `qualify` copies it)."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as err:
        raise InvalidQuery(f"merge is not valid DuckDB SQL: {err}") from err
    if len(statements) != 1:
        raise InvalidQuery(f"merge must be exactly one statement, got {len(statements)}")
    return statements[0]


def cte_names(tree: exp.Expression) -> set[str]:
    return {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}


def check_merge(tree: exp.Expression, step_ids: Collection[str]) -> None:
    """Raise MergeBlocked unless `tree` only reads the step tables.

    Raises:
        MergeBlocked: the reason names what was found.
        InvalidQuery: a table name that is neither a step nor a CTE (a typo, most likely).
    """
    if not isinstance(tree, exp.Query):
        raise MergeBlocked(
            f"a merge must be a query (SELECT/WITH/UNION), not {type(tree).__name__.upper()}"
        )
    steps = {s.lower() for s in step_ids}
    ctes = cte_names(tree)
    if shadow := sorted(ctes & steps):
        raise InvalidQuery(f"merge CTE {shadow[0]!r} has the name of a step table; rename it")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise MergeBlocked(f"{type(node).__name__.upper()} is not allowed in a merge")
        if isinstance(node, exp.Table):
            _check_table(node, steps, ctes)
        elif isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if type(node).__name__.startswith("Read") or name.startswith(_FORBIDDEN_FUNCTIONS):
                raise MergeBlocked(
                    f"function {name}() is not allowed in a merge (it reads "
                    "files, settings or the catalog)"
                )


def _check_table(node: exp.Table, steps: set[str], ctes: set[str]) -> None:
    if not isinstance(node.this, exp.Identifier):
        raise MergeBlocked(
            f"table function {node.this.sql('duckdb')} is not allowed in a "
            "merge; read the step tables only"
        )
    name = node.name
    if node.args.get("db") or node.args.get("catalog"):
        raise MergeBlocked(
            f"qualified table {node.sql('duckdb')} is not allowed in a merge; "
            "name step tables by their step_id"
        )
    if name.lower() not in steps and name.lower() not in ctes:
        if node.this.quoted and ("." in name or "/" in name):
            raise MergeBlocked(f"{name!r} looks like a file; a merge reads step tables only")
        raise InvalidQuery(
            f"merge names unknown step table {name!r}",
            suggestion=f"step tables: {', '.join(sorted(steps))}",
        )


def qualify(tree: exp.Expression, schema: str, step_ids: Collection[str]) -> str:
    """DuckDB SQL of the checked merge with every step table read from `schema`."""
    steps = {s.lower() for s in step_ids}
    out = tree.copy()
    for table in out.find_all(exp.Table):
        if table.name.lower() in steps:
            if not table.alias:
                table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
            table.set("db", exp.to_identifier(schema))
    return out.sql(dialect="duckdb")
