"""The connector protocol and the values that cross it.

A connector owns a long-lived pool to one database. The engine hands it a `Statement`
(already checked and rewritten by the safety pipeline) and reads bounded `Batch`es back.
Column types are DuckDB type names (see `LOGICAL_TYPES`), so the sink never guesses a type
from the first value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    import pyarrow as pa

    from connectors.config import DatabaseConfig

# DuckDB type names every connector maps its native types onto. DECIMAL carries (p,s),
# e.g. "DECIMAL(12,2)"; anything without a faithful mapping becomes VARCHAR.
LOGICAL_TYPES: tuple[str, ...] = (
    "BOOLEAN",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "REAL",
    "DOUBLE",
    "DECIMAL",
    "VARCHAR",
    "BLOB",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "TIMESTAMPTZ",
    "INTERVAL",
    "UUID",
    "JSON",
)


class Column(msgspec.Struct, frozen=True):
    """A result column: its name and its DuckDB type name (one of LOGICAL_TYPES)."""

    name: str
    type: str


@dataclass(slots=True)
class Batch:
    """A bounded slice of a result. Exactly one of `rows` (tuples) or `arrow` is set.

    The row form is the dashboard path (few rows, no Arrow overhead); the Arrow form is the
    bulk path (no Python object per value). `columns` is the same for every batch of a stream.
    """

    columns: Sequence[Column]
    rows: list[tuple[Any, ...]] | None = None
    arrow: pa.RecordBatch | None = None

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        return self.arrow.num_rows if self.arrow is not None else 0


@dataclass(slots=True, frozen=True)
class LinkFilter:
    """Restrict a child step to rows whose `column` is one of `values` (distinct, no NULLs).

    `type` is the parent column's DuckDB type name, so the bound parameter is typed the way
    the parent produced it (e.g. `= ANY($1::bigint[])`).
    """

    column: str
    values: Sequence[Any]
    type: str


@dataclass(slots=True)
class Statement:
    """What a connector executes: the native text (SQL, or MQL JSON) plus bound parameters.

    `max_rows` is the fetch cap the guardrails chose (cap + 1, so truncation is seen);
    `readonly` is lifted only for a request that passed the pipeline with a write grant.
    `bulk` asks for the columnar fetch path (Arrow batches) instead of row tuples.
    `inline` is the same statement with its parameters written out as the literals that were
    checked, for a connector that finds a parameter it cannot bind as given.
    """

    text: str
    params: Sequence[Any] = ()
    timeout: float = 30.0
    readonly: bool = True
    max_rows: int | None = None
    batch_size: int = 10_000
    bulk: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    inline: str | None = None


class StatSource(msgspec.Struct, frozen=True):
    """Where a catalog figure comes from, and whether it is exact or an estimate."""

    source: str  # e.g. "pg_stats.n_distinct", "MIN()/MAX() query", "first 100,000 rows"
    exact: bool


class Distribution(msgspec.Struct):
    """Per-field statistics, from the database's own statistics where it keeps them.
    `sources` names, per figure (distinct_count, null_fraction, sample_values, min_value,
    max_value), where it comes from and whether it is exact; values are formatted as query
    results are (ISO-8601 timestamps)."""

    distinct_count: int | None = None
    null_fraction: float | None = None
    sample_values: list[Any] = msgspec.field(default_factory=list)
    min_value: Any = None
    max_value: Any = None
    sources: dict[str, StatSource] = msgspec.field(default_factory=dict)


class FieldInfo(msgspec.Struct):
    name: str
    data_type: str
    nullable: bool = True
    is_primary: bool = False
    is_foreign_key: bool = False
    description: str = ""
    distribution: Distribution | None = None


class TableInfo(msgspec.Struct):
    name: str
    fields: list[FieldInfo]
    row_count_estimate: int | None = None
    description: str = ""
    row_count_source: StatSource | None = None


class PoolStats(msgspec.Struct, frozen=True):
    """A connection pool's size and the connections checked out of it, for /metrics."""

    in_use: int
    size: int


@runtime_checkable
class Connector(Protocol):
    """One database behind one small interface; everything sluice knows about one database
    type lives in its connector module.

    - `settings`: the msgspec structs its config entries decode into, one per type name it
      answers to (the struct's tag is the config's `type`; see connectors.config).
    - `language`: the registered name of the query language it speaks (safety.languages).
    - `dialect`: what that language needs to know about this database's flavour of it
      (the sqlglot dialect for SQL).
    """

    settings: ClassVar[tuple[type[DatabaseConfig], ...]]
    language: ClassVar[str]
    dialect: ClassVar[str]

    config: DatabaseConfig

    def __init__(self, config: DatabaseConfig) -> None: ...

    async def open(self) -> None:
        """Create the pool/client. Raises ConnectorUnavailable when unreachable."""

    async def close(self) -> None:
        """Release every connection; safe to call twice or after a failed open."""

    async def ping(self) -> None:
        """A round trip to the server. Raises ConnectorUnavailable."""

    async def discover(self) -> list[TableInfo]:
        """Tables, fields and distributions (the engine caches this; never per request)."""

    def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        """Yield bounded batches of the statement's result.

        Honours `statement.timeout` on the server side where the database supports it and
        by cancellation; stops the running statement when the caller is cancelled; returns
        the connection to the pool in a clean state. Raises QueryFailed / QueryTimedOut /
        ConnectorUnavailable, never a driver exception.
        """

    async def execute_write(self, statement: Statement) -> int:
        """Run one write in a transaction that commits only on success; rows affected."""

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        """Return the statement restricted to the link values (bound parameters only)."""

    def pool_stats(self) -> PoolStats | None:
        """The pool's size and use, or None for a database without a pool (files)."""
