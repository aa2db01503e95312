"""In-process use without HTTP: `async with Sluice(config) as s: await s.simple(...)`.

The CLI and Python scripts take the same QueryService path as the HTTP handlers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from api import metrics
from api.envelopes import DryRunResponse, QuerySuccess, SimpleQueryRequest
from api.middleware import new_request_id
from api.service import QueryService, RequestContext
from engine.config import Config
from engine.federated import StepProgress
from engine.ir import FederatedQuery
from engine.runtime import Runtime


@contextlib.asynccontextmanager
async def open_service(
    config: Config, *, startup_wait: float | None = None, principal: str | None = None
) -> AsyncIterator[LocalSession]:
    runtime_ = Runtime(config, on_audit_drop=metrics.audit_dropped)
    async with runtime_.running(startup_wait=startup_wait) as runtime:
        yield LocalSession(QueryService(runtime), principal)


class LocalSession:
    def __init__(self, service: QueryService, principal: str | None) -> None:
        self.service = service
        self.principal = principal
        self.last_request_id: str | None = None  # for the envelope of a failed call

    def context(self) -> RequestContext:
        self.last_request_id = new_request_id()
        return RequestContext(
            request_id=self.last_request_id, principal=self.principal, transport="python"
        )

    async def simple(
        self,
        database: str,
        table: str,
        query: str,
        *,
        language: str | None = None,
        dry_run: bool = False,
    ) -> QuerySuccess | DryRunResponse:
        req = SimpleQueryRequest(
            database=database, table=table, query=query, language=language, dry_run=dry_run
        )
        return await self.service.simple(req, self.context())

    async def federated(
        self,
        query: FederatedQuery,
        *,
        on_progress: Callable[[StepProgress], None] | None = None,
        export: bool = False,
    ) -> QuerySuccess | DryRunResponse:
        """`export=True`: the whole answer is wanted (a file): the export row bound applies
        and a step that hit its cap fails the query unless `query.allow_truncation`."""
        return await self.service.federated(
            query, self.context(), on_progress=on_progress, export=export
        )

    async def rows(self, database: str, table: str, query: str) -> list[dict[str, Any]]:
        result = await self.simple(database, table, query)
        assert isinstance(result, QuerySuccess)
        return result.data.rows
