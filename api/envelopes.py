"""Every request body and response envelope as a msgspec Struct; one encoder, decoders built
once per body type. Shapes follow reference/query-api-endpoints.txt exactly; fields we add
(truncated, rows_affected, dry_run, result_pages) are additive."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from connectors.base import TableInfo
from engine.execute import StepMeta
from engine.federated import MemoryReport, ResultPages
from engine.ir import FederatedQuery
from safety.types import StageName, Step


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies reject unknown fields, so a typo is a 400 naming it."""


class SimpleQueryRequest(Body):
    """POST /v1/query/simple."""

    database: str
    table: str
    query: str
    language: str | None = None
    dry_run: bool = False

    def step(self) -> Step:
        """The one step it asks for, as the safety pipeline reads it."""
        return Step(
            database=self.database, table=self.table, query=self.query, language=self.language
        )


class Pagination(msgspec.Struct, kw_only=True):
    page: int
    size: int
    total_databases: int
    total_pages: int
    has_more: bool


class DatabaseEntry(msgspec.Struct, kw_only=True):
    name: str
    type: str
    database: str
    reachable: bool
    tables: list[TableInfo]
    error: str | None


class DatabasesResponse(msgspec.Struct, kw_only=True):
    databases: list[DatabaseEntry]
    pagination: Pagination


class HealthResponse(msgspec.Struct, kw_only=True):
    status: str
    version: str
    databases_connected: int


class Data(msgspec.Struct, kw_only=True, omit_defaults=True):
    columns: list[str]
    rows: list[dict[str, Any]]
    row_count: int
    truncated: bool = False
    rows_affected: int | None = None


class SafetyReport(msgspec.Struct, kw_only=True):
    stages_passed: list[StageName]
    warnings: list[str]


class Metadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`result_pages` appears only when a federated result has more rows than inline;
    `memory` (peak RSS, spilled steps) only on a federated request that ran."""

    database: str | None
    execution_time_ms: float
    transport: str
    steps: list[StepMeta]
    merge_latency_ms: float | None
    result_pages: ResultPages | None = None
    memory: MemoryReport | None = None
    merge_engine: str | None = None  # sluice-only: "spark" when the merge ran there


class DryRunStep(msgspec.Struct, kw_only=True):
    step_id: str | None
    database: str
    table: str
    language: str
    operation: str
    original: str
    rewritten: str
    row_cap: int | None
    timeout_seconds: float


class QuerySuccess(msgspec.Struct, kw_only=True):
    request_id: str
    status: Literal["ok"]
    data: Data
    safety: SafetyReport
    metadata: Metadata


class DryRunResponse(msgspec.Struct, kw_only=True):
    """`"dry_run": true`: the verdicts and the rewritten queries; nothing was executed."""

    request_id: str
    status: Literal["dry_run"]
    safety: SafetyReport
    steps: list[DryRunStep]
    plan: str | None = None


class BlockedError(msgspec.Struct, kw_only=True):
    stage: StageName
    reason: str
    suggestion: str | None


class QueryBlocked(msgspec.Struct, kw_only=True):
    request_id: str
    status: Literal["blocked"]
    error: BlockedError


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    suggestion: str | None = None
    details: dict[str, Any] | None = None


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    """Every non-2xx response that is not a safety block (which has its own shape)."""

    request_id: str
    status: Literal["error"]
    error: ErrorBody


class ResultPage(msgspec.Struct, kw_only=True):
    request_id: str
    page: int
    size: int
    columns: list[str]
    rows: list[dict[str, Any]]
    has_more: bool
    total_rows: int


# decimals as JSON numbers (exact digits), bytes as base64, datetimes ISO-8601, UUIDs as text
ENCODER = msgspec.json.Encoder(decimal_format="number")
SIMPLE_DECODER = msgspec.json.Decoder(SimpleQueryRequest)
FEDERATED_DECODER = msgspec.json.Decoder(FederatedQuery)
