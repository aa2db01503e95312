"""What is dangerous in a SQL statement, found on the AST (never in raw text, so `'--'` or
`update` inside a string literal and a column named `update_at` are never findings).

Two lists come out of one walk:
- `structural`: side effects AST_CHECKER refuses at any level. They count as writes or DDL,
  but none is allowed through the query API: time-based, file, network and dynamic-SQL
  functions, COPY, SELECT ... INTO, writing CTEs, row locks, sequence writes in a read.
- `injection`: what INJECTION_ANALYSER reports, each a block or a warning: the same
  time/file/network functions (so a one-stage run still catches them), credential catalogs,
  comment truncation, MySQL executable comments, OR-tautologies and NULL-column UNION probes
  (warnings), catalog reads (warnings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlglot import exp

from safety.sql_access import is_cte_reference, is_real_table

TIME_FUNCTIONS = frozenset(
    {
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "sleep",
        "benchmark",
        "dbms_lock.sleep",
        "waitfor",
    }
)

# Read or write files, reach the network, or run a query given as a string (bypassing RBAC).
FILE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_logdir_ls",
        "load_file",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "glob",
        "sniff_csv",
        "getenv",
        "query",
        "query_table",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "schema_to_xml",
        "database_to_xml",
        "ts_stat",
        "xpath_table",
        "http_get",
        "http_post",
        "http_request",
        "sys_exec",
        "sys_eval",
        "copy_database",
    }
)
FILE_PREFIXES = (
    "lo_",
    "dblink",
    "read_",
    "parquet_",
    "iceberg_",
    "delta_",
    "http_",
    "pg_read_",
    "pg_file_",
    "utl_",
)
FILE_SUFFIXES = ("_scan", "_attach")

# Writes or server-state changes dressed as function calls.
SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "set_config",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "is_free_lock",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_notify",
        "pg_promote",
        "pg_logical_emit_message",
        "pg_drop_replication_slot",
        "txid_current",
        "pg_current_xact_id",
        "master_pos_wait",
        "source_pos_wait",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_import_system_collations",
        "pg_stat_reset",
        "checkpoint",
        "force_checkpoint",
        "install_extension",
        "load_extension",
    }
)
SIDE_EFFECT_PREFIXES = (
    "pg_advisory",
    "pg_try_advisory",
    "pg_create_",
    "pg_replication_",
    "pg_stat_reset",
)
SEQUENCE_WRITES = frozenset({"nextval", "setval"})

# Table functions a query may read from (everything else in FROM is a file/remote reader).
TABLE_FUNCTIONS = frozenset(
    {
        "generate_series",
        "exploding_generate_series",
        "range",
        "unnest",
        "json_each",
        "json_each_text",
        "jsonb_each",
        "jsonb_each_text",
        "json_array_elements",
        "json_array_elements_text",
        "jsonb_array_elements",
        "jsonb_array_elements_text",
        "json_to_recordset",
        "jsonb_to_recordset",
        "json_to_record",
        "jsonb_to_record",
        "json_tree",
        "regexp_split_to_table",
        "string_to_table",
        "generate_subscripts",
        "json_object_keys",
        "jsonb_object_keys",
        "values",
    }
)

CATALOG_SCHEMAS = frozenset(
    {
        "information_schema",
        "pg_catalog",
        "mysql",
        "performance_schema",
        "sys",
        "sqlite_master",
        "temp",
    }
)
CATALOG_TABLES = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
)
# Password hashes and user mappings: never readable, whatever the policy says.
CREDENTIAL_TABLES = frozenset(
    {
        "pg_authid",
        "pg_shadow",
        "pg_user_mapping",
        "pg_user_mappings",
        "user",
        "global_priv",
        "pg_auth_members",
    }
)
_CREDENTIAL_SCHEMAS = {
    "pg_authid": "",
    "pg_shadow": "",
    "pg_user_mapping": "",
    "pg_user_mappings": "",
    "pg_auth_members": "",
    "user": "mysql",
    "global_priv": "mysql",
}

FILE_LIKE = re.compile(r"[./\\:~*]")
_SQLISH = re.compile(
    r"\b(and|or|where|union|select|limit|from|having|order\s+by)\b.*"
    r"(=|<|>|\blike\b|\bin\b|\d|')",
    re.IGNORECASE | re.DOTALL,
)

# (reason, suggestion)
Finding = tuple[str, str | None]


@dataclass(slots=True)
class Findings:
    structural: list[Finding] = field(default_factory=list)
    injection_blocks: list[Finding] = field(default_factory=list)
    injection_warnings: list[str] = field(default_factory=list)


def function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return node.sql_name().lower()


def classify_function(name: str) -> str | None:
    """ "time", "file", "side_effect", "sequence" or None for an ordinary function."""
    if name in TIME_FUNCTIONS:
        return "time"
    if name in FILE_FUNCTIONS or name.startswith(FILE_PREFIXES) or name.endswith(FILE_SUFFIXES):
        return "file"
    if name in SIDE_EFFECT_FUNCTIONS or name.startswith(SIDE_EFFECT_PREFIXES):
        return "side_effect"
    if name in SEQUENCE_WRITES:
        return "sequence"
    return None


def find(
    tree: exp.Expression,
    dialect: str,
    operation: str | None,
    comments: tuple[str, ...],
    trailing: str | None,
) -> Findings:
    out = Findings()
    structural, blocks, warns = out.structural, out.injection_blocks, out.injection_warnings
    never = "never allowed through sluice"
    for node in tree.walk():
        if isinstance(node, exp.Or):  # before Func: connectors are Func subclasses
            for side in (node.this, node.expression):
                if is_tautology(side):
                    warns.append(
                        f"tautology `{side.sql(dialect=dialect)}` under OR makes the "
                        "filter match every row"
                    )
        elif isinstance(node, exp.Connector | exp.Binary | exp.Unary):
            continue
        elif isinstance(node, exp.Func):
            _function(node, operation, out)
        elif isinstance(node, exp.Table):
            _table(node, dialect, out)
        elif isinstance(node, exp.Lock):
            structural.append(
                (
                    f"{node.sql(dialect=dialect)} takes row locks (counted as a write); {never}",
                    "drop the locking clause",
                )
            )
        elif (
            isinstance(node, exp.Insert | exp.Update | exp.Delete | exp.Merge) and node is not tree
        ):
            kind = type(node).__name__.upper()
            structural.append(
                (
                    f"a data-modifying {kind} inside another statement (a writing "
                    f"CTE or subquery) is {never}",
                    f"send the {kind} as its own statement",
                )
            )
        elif isinstance(node, exp.Select) and node.args.get("into") is not None:
            structural.append(
                (
                    f"SELECT ... INTO creates a table (counted as DDL); {never}",
                    "select the rows without INTO",
                )
            )
        elif isinstance(node, exp.Union):
            for side in (node.left, node.right):
                if (
                    isinstance(side, exp.Select)
                    and len(side.expressions) > 1
                    and all(isinstance(e, exp.Null) for e in side.expressions)
                ):
                    warns.append("UNION branch of NULL columns (looks like column-count probing)")
    if dialect == "mysql":
        for comment in comments:
            if comment.lstrip().startswith("!"):
                blocks.append(
                    (
                        "MySQL executable comment `/*!...*/` hides SQL the server runs",
                        "remove the comment",
                    )
                )
    for comment in comments:
        if comment.count("'") % 2 or comment.count('"') % 2:
            blocks.append(
                (
                    f"comment `{comment.strip()[:60]}` holds an unbalanced quote "
                    "(a statement cut off by a comment)",
                    "remove the comment",
                )
            )
            break
    if trailing is not None and _SQLISH.search(trailing) and not blocks:
        warns.append(
            f"trailing comment `{trailing.strip()[:60]}` looks like SQL cut off from the statement"
        )
    return out


def _function(node: exp.Func, operation: str | None, out: Findings) -> None:
    name = function_name(node)
    kind = classify_function(name)
    if kind is None and type(node).__name__.startswith("Read"):
        kind = "file"
    never = "never allowed through sluice"
    if kind == "time":
        out.structural.append(
            (f"{name}() is a time-based side effect (counted as DDL); {never}", "remove the call")
        )
        out.injection_blocks.append(
            (f"time-based function {name}() (blind injection pattern)", "remove the call")
        )
    elif kind == "file":
        out.structural.append(
            (
                f"{name}() reads files, the network or a query string (counted as DDL); {never}",
                "read tables of a configured database instead",
            )
        )
        out.injection_blocks.append(
            (f"file/network function {name}()", "read tables of a configured database instead")
        )
    elif kind == "side_effect":
        out.structural.append(
            (f"{name}() changes server state (counted as a write); {never}", "remove the call")
        )
    elif kind == "sequence" and operation == "SELECT":
        out.structural.append(
            (
                f"{name}() writes a sequence, but the statement is a read that runs read-only",
                "call it inside an INSERT or UPDATE",
            )
        )


def _table(node: exp.Table, dialect: str, out: Findings) -> None:
    if not is_real_table(node):
        inner = node.this
        name = function_name(inner) if isinstance(inner, exp.Func) else type(inner).__name__
        if name not in TABLE_FUNCTIONS:
            if classify_function(name) is None and not type(inner).__name__.startswith("Read"):
                # an unknown table function may read files or remote data: refuse it
                shown = " ".join(node.sql(dialect=dialect).split())[:60]
                out.structural.append(
                    (
                        f"table function `{shown}` is not allowed in FROM (allowed: "
                        "generate_series, unnest, range, json_each and similar)",
                        "read tables of a configured database instead",
                    )
                )
        return
    if is_cte_reference(node):
        return
    name, schema = node.name.lower(), node.db.lower()
    if dialect == "duckdb" and FILE_LIKE.search(node.name):
        # DuckDB reads `FROM 'file.csv'` / `FROM "x.parquet"` as files (replacement scans)
        out.structural.append(
            (
                f"`{node.name}` names a file (DuckDB reads it directly); "
                "never allowed through sluice",
                "read tables of a configured database instead",
            )
        )
        return
    if (
        name in CREDENTIAL_TABLES
        and (schema in ("", "pg_catalog") or _CREDENTIAL_SCHEMAS.get(name) == schema)
        and (name != "user" or schema == "mysql")
    ):
        out.injection_blocks.append((f"{node.sql()} holds credentials", None))
    elif (
        schema in CATALOG_SCHEMAS
        or name in CATALOG_TABLES
        or (not schema and name.startswith("pg_") and dialect == "postgres")
    ):
        out.injection_warnings.append(f"reads the system catalog ({node.sql()})")


def is_tautology(node: exp.Expression) -> bool:
    """An always-true operand: TRUE, a non-zero number, `x = x`, or two literals comparing true."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        return not node.is_string and node.this not in ("0", "0.0")
    if isinstance(node, exp.Not) and isinstance(node.this, exp.Boolean):
        return not node.this.this
    if isinstance(node, exp.Or):
        return is_tautology(node.this) or is_tautology(node.expression)
    if isinstance(node, exp.EQ | exp.GTE | exp.LTE) and node.this == node.expression:
        return True
    if (
        isinstance(node, exp.EQ | exp.NEQ | exp.GT | exp.LT | exp.GTE | exp.LTE)
        and isinstance(node.this, exp.Literal)
        and isinstance(node.expression, exp.Literal)
    ):
        left, right = _value(node.this), _value(node.expression)
        try:
            return bool(_COMPARE[type(node)](left, right))
        except TypeError:
            return False
    return False


_COMPARE = {
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.GT: lambda a, b: a > b,
    exp.LT: lambda a, b: a < b,
    exp.GTE: lambda a, b: a >= b,
    exp.LTE: lambda a, b: a <= b,
}


def _value(lit: exp.Literal) -> object:
    if lit.is_string:
        return lit.this
    try:
        return float(lit.this)
    except ValueError:
        return lit.this
