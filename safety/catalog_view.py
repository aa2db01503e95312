"""The catalog as one principal may see it, through the same permission model as queries.

A table the principal holds no grant on is not listed; a denied column is not shown; a table
it may not read (a write-only grant) is listed without distributions, since sample values
and min/max are reads. A database absent from the principal's permission set is not listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from connectors.base import TableInfo
from safety.policy import DatabaseGrants, database_grants, permission_set

if TYPE_CHECKING:
    from connectors.config import DatabaseConfig
    from safety.config import CheckConfig


def grants_for(config: CheckConfig, principal: str | None, db: DatabaseConfig) -> DatabaseGrants:
    return database_grants(config, principal, db.name, db.default_schemas())


def database_visible(config: CheckConfig, principal: str | None, database: str) -> bool:
    """Whether the principal's permission set names the database at all."""
    pset, _ = permission_set(config, principal)
    return database in pset


def table_view(grants: DatabaseGrants, table: TableInfo) -> TableInfo | None:
    """`table` as the grants allow it to be seen, or None when it may not be seen."""
    schema, _, name = table.name.rpartition(".")
    grant = grants.lookup(name, schema)
    if grant.level == "none":
        return None
    readable = grant.allows("SELECT")
    if readable and not grant.deny_columns:
        return table
    fields = [
        f if readable else msgspec.structs.replace(f, distribution=None)
        for f in table.fields
        if f.name.lower() not in grant.deny_columns
    ]
    return msgspec.structs.replace(table, fields=fields)


def tables_view(grants: DatabaseGrants, tables: Sequence[TableInfo]) -> list[TableInfo]:
    return [v for t in tables if (v := table_view(grants, t)) is not None]
