"""Names that matter to the safety checks: functions that sleep, touch files or the
network, run a query given as a string, or change server state; the table functions a query
may read from; the system catalogs and the credential tables among them.
"""

from __future__ import annotations

import re

from sqlglot import exp

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
CREDENTIAL_SCHEMAS = {
    "pg_authid": "",
    "pg_shadow": "",
    "pg_user_mapping": "",
    "pg_user_mappings": "",
    "pg_auth_members": "",
    "user": "mysql",
    "global_priv": "mysql",
}

FILE_LIKE = re.compile(r"[./\\:~*]")  # a DuckDB "table" that is really a file path


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
