"""Connection settings of one database, as written under `databases:` in sluice.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

DatabaseType = Literal[
    "postgresql", "mysql", "sqlite", "duckdb", "mongodb", "pgvector", "qdrant", "lancedb"
]
DATABASE_TYPES: tuple[str, ...] = (
    "postgresql",
    "mysql",
    "sqlite",
    "duckdb",
    "mongodb",
    "pgvector",
    "qdrant",
    "lancedb",
)

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Every config struct rejects unknown keys so a typo fails at start, not silently."""


class DatabaseConfig(Base):
    """One entry of `databases:`. Connect with host/port/..., a `dsn`, or a `path` (files)."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")]
    type: DatabaseType
    host: str | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    database: str | None = None
    user: str | None = None
    password: str | None = None
    dsn: str | None = None
    path: str | None = None
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    connect_timeout_seconds: PositiveFloat = 5.0
    query_timeout_seconds: PositiveFloat | None = None  # falls back to safety.query_timeout_seconds
    description: str = ""

    @property
    def display_database(self) -> str:
        """The database name shown in /v1/databases (never the password or the DSN)."""
        if self.database:
            return self.database
        if self.path:
            return self.path
        if self.dsn:
            tail = self.dsn.rsplit("/", 1)[-1]
            return tail.split("?", 1)[0]
        return self.name
