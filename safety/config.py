"""The safety layer's own settings, as written under `safety:` and `permissions:` in
sluice.yaml (engine/config.py reads the file and embeds these), and `CheckConfig`: what the
pipeline reads of the whole configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from connectors.config import Base, PositiveFloat, PositiveInt

if TYPE_CHECKING:
    from connectors.config import DatabaseConfig

Level = Literal["R", "W", "RW", "RA", "RWA", "A", "none"]
DenyPolicy = Literal["PARTIAL", "BLOCK"]


class TablePolicy(Base, frozen=True):
    """A per-table override: its level and the columns it may never read or filter on."""

    level: Level = "R"
    deny_columns: list[str] = msgspec.field(default_factory=list)


class DatabasePolicy(Base, frozen=True):
    """A database baseline plus per-table overrides. A table covered by neither is denied."""

    level: Level = "none"
    tables: dict[str, Level | TablePolicy] = msgspec.field(default_factory=dict)


PermissionSet = dict[str, DatabasePolicy]


class Permissions(Base, frozen=True):
    """`default` applies to requests without a principal of their own (no auth configured)."""

    default: PermissionSet = msgspec.field(default_factory=dict)
    principals: dict[str, PermissionSet] = msgspec.field(default_factory=dict)


class SafetyConfig(Base, frozen=True):
    max_rows_per_query: PositiveInt = 10_000
    # exports (`sluice query -o`) and runs asked for the whole answer: their own bound
    max_export_rows: PositiveInt = 10_000_000
    inline_rows: PositiveInt = 1_000
    query_timeout_seconds: PositiveFloat = 30.0
    max_query_chars: PositiveInt = 100_000
    max_link_values_per_batch: PositiveInt = 2_000
    link_batches_in_flight: PositiveInt = 3
    deny_policy: DenyPolicy = "PARTIAL"


class _BodyLimit(Protocol):
    @property
    def body_limit_bytes(self) -> int: ...


class CheckConfig(Protocol):
    """What the safety pipeline reads of the configuration (engine.config.Config is one)."""

    @property
    def safety(self) -> SafetyConfig: ...

    @property
    def permissions(self) -> Permissions: ...

    @property
    def server(self) -> _BodyLimit: ...

    def database(self, name: str) -> DatabaseConfig | None: ...
