"""Connection settings of one database, as written under `databases:` in sluice.yaml.

Each connector module declares its own settings struct, a subclass of `DatabaseConfig` tagged
with its type name (`class PostgresSettings(ServerSettings, tag="postgresql")`); the config
loader decodes a `databases` entry with the struct the registry finds for its `type`.
`ServerSettings` and `FileSettings` hold the fields shared by server and file databases.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Every config struct rejects unknown keys so a typo fails at start, not silently."""


class DatabaseConfig(Base, tag_field="type", frozen=True):
    """One entry of `databases:`: the fields every database has. `type` is the tag."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")]
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    connect_timeout_seconds: PositiveFloat = 5.0
    query_timeout_seconds: PositiveFloat | None = None  # falls back to safety.query_timeout_seconds
    description: str = ""

    @property
    def type(self) -> str:
        """The configured database type (the struct's tag)."""
        return str(type(self).__struct_config__.tag)

    @property
    def display_database(self) -> str:
        """The database name shown in /v1/databases (never the password or the DSN)."""
        return self.name

    def default_schemas(self) -> tuple[str, ...]:
        """Schemas an unqualified table name lives in (`public.users` is `users`)."""
        return ()

    def problem(self) -> str | None:
        """A combination of settings that cannot connect, checked when the config loads."""
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every secret in these settings, masked wherever sluice logs text (audit log)."""
        return ()

    def resolved(self, base: Path) -> DatabaseConfig:
        """These settings with relative file paths resolved against the config's folder."""
        return self


class ServerSettings(DatabaseConfig, frozen=True):
    """A database server: connect with host/port/... or a `dsn`."""

    host: str | None = None
    port: Port | None = None
    database: str | None = None
    user: str | None = None
    password: str | None = None
    dsn: str | None = None

    @property
    def display_database(self) -> str:
        if self.database:
            return self.database
        if self.dsn:
            tail = self.dsn.rsplit("/", 1)[-1]
            return tail.split("?", 1)[0]
        return self.name

    def secrets(self) -> tuple[str, ...]:
        found = [self.password] if self.password else []
        if self.dsn:
            for pattern in (r"://[^:/@\s]*:([^@\s/]+)@", r"(?i)\bpassword=([^\s&;]+)"):
                m = re.search(pattern, self.dsn)
                if m:
                    found.append(m.group(1))
        return tuple(found)

    def problem(self) -> str | None:
        if self.dsn and (self.host or self.port):
            return "give either `dsn` or `host`/`port`, not both"
        return None


class FileSettings(DatabaseConfig, frozen=True):
    """An embedded database in one file."""

    path: str | None = None

    @property
    def display_database(self) -> str:
        return self.path or self.name

    def problem(self) -> str | None:
        if not self.path:
            return f"a {self.type} database needs `path` (the database file)"
        return None

    def resolved(self, base: Path) -> DatabaseConfig:
        if not self.path or os.path.isabs(self.path):
            return self
        return msgspec.structs.replace(self, path=str((base / self.path).resolve()))


def allowed_keys(struct: type[msgspec.Struct]) -> list[str]:
    """The keys a settings struct accepts, in order, with its tag field after `name`."""
    names = [f.name for f in msgspec.structs.fields(struct)]
    tag_field: Any = struct.__struct_config__.tag_field
    if tag_field and tag_field not in names:
        names.insert(1 if names[:1] == ["name"] else 0, tag_field)
    return names
