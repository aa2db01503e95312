"""Execution of a run and the run manager's wiring: a queued run executes through
`QueryService.federated` (the same checked path as /v1/query) with its settings from
`config.server`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from api import metrics as m
from api.envelopes import QuerySuccess
from api.service import bounded
from engine.execute import Outcome, StepProgress
from engine.federated import MemoryReport
from engine.ir import FederatedQuery
from engine.run_execution import RunOutcome
from engine.run_records import RunRecord, StepStatus
from engine.run_state import RunProgress, RunSettings
from engine.run_store import open_store
from engine.runs import RunManager

if TYPE_CHECKING:
    from api.service import QueryService
    from engine.config import Config


def service_executor(
    service: QueryService,
) -> Callable[[RunRecord, RunProgress], Awaitable[RunOutcome]]:
    """Execute a run through QueryService.federated, reporting step progress into the run
    and storing the whole result under the run id."""
    from api.service import RequestContext

    async def execute(record: RunRecord, progress: RunProgress) -> RunOutcome:
        query = msgspec.json.decode(record.config, type=FederatedQuery)
        ctx = RequestContext(
            request_id=f"req_{record.run_id[-12:]}", principal=record.principal, transport="run"
        )
        began: dict[str, float] = {}

        def on_progress(p: StepProgress) -> None:
            if p.event == "started":
                began[p.step_id] = p.at_ms
            if p.event == "finished":
                progress.step(
                    p.step_id, StepStatus.COMPLETED, p.rows, p.at_ms - began.get(p.step_id, p.at_ms)
                )
            else:
                progress.step(p.step_id, StepStatus.RUNNING, p.rows)

        work = service.federated(
            query,
            ctx,
            on_progress=on_progress,
            result_id=record.run_id,
            export=True,
            bound_whole_request=False,  # a run is bounded by its timeout_secs...
        )
        if record.timeout_secs is None:  # ...or, without one, by limits.max_run_seconds
            limit = service.config.limits.max_run_seconds
            result = await bounded(work, limit, "limits.max_run_seconds")
        else:
            result = await work
        assert isinstance(result, QuerySuccess)  # a run is never a dry run (to_query refuses)
        for meta in result.metadata.steps:
            state = StepStatus.COMPLETED if meta.status == Outcome.OK else StepStatus(meta.status)
            progress.step(meta.step_id, state, meta.rows_returned, meta.latency_ms)
        for warning in result.safety.warnings:
            progress.log(f"warning: {warning}", "warning")
        if (memory := result.metadata.memory) is not None:
            progress.log(memory_line(memory))
        return RunOutcome(records_written=result.data.row_count, result_id=record.run_id)

    return execute


def memory_line(memory: MemoryReport) -> str:
    """The run log's line about memory: peak RSS, and what spilled to Parquet."""
    mib = 1024**2
    line = f"memory: peak RSS {memory.peak_rss_bytes / mib:.0f} MiB"
    if memory.spilled_steps:
        line += (
            f"; steps spilled to Parquet: {', '.join(memory.spilled_steps)} "
            f"({memory.spilled_bytes / mib:.1f} MiB)"
        )
    if memory.merge_memory_limit_bytes is not None:
        line += f"; merge memory_limit {memory.merge_memory_limit_bytes / mib:.0f} MiB"
    return line


def build_run_manager(config: Config, service: QueryService) -> RunManager:
    """The manager for create_app's lifespan, with its settings from `config.server`
    (`sluice serve` flags are applied to the config before it gets here)."""
    server = config.server
    return RunManager(
        open_store(server.run_store, server.data_dir),
        service_executor(service),
        RunSettings.of(server),
        hooks=m.RunMetrics(),
    )
