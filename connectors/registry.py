"""Database type -> connector class. Built-ins are looked up the same way a plugin would be."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from connectors.errors import UnknownConnector

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.config import DatabaseConfig

# "module:Class", imported on first use so an unused driver costs nothing at start.
BUILTINS: dict[str, str] = {
    "postgresql": "connectors.postgres:PostgresConnector",
    "mysql": "connectors.mysql:MySQLConnector",
    "sqlite": "connectors.sqlite:SQLiteConnector",
    "duckdb": "connectors.duckdb_file:DuckDBConnector",
    "mongodb": "connectors.mongo:MongoConnector",
    "pgvector": "connectors.pgvector:PgvectorConnector",
    "qdrant": "connectors.qdrant:QdrantConnector",
    "lancedb": "connectors.lancedb:LanceDBConnector",
}


def get(type_name: str) -> type[Connector]:
    """The connector class for a config `type`; an unknown name gets a "did you mean"."""
    target = BUILTINS.get(type_name)
    if target is None:
        close = difflib.get_close_matches(type_name, BUILTINS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownConnector(
            f"unknown database type {type_name!r}{hint} known: {', '.join(sorted(BUILTINS))}"
        )
    module_name, _, class_name = target.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create(config: DatabaseConfig) -> Connector:
    """Build (not open) the connector for one configured database."""
    return get(config.type)(config)  # type: ignore[call-arg]
