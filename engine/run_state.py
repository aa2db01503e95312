"""What the runs code of one process shares: its settings (passed in, never read from the
environment), the observability hooks, the runs executing here with their cancel scopes and
progress, the in-memory log buffers and the spool of log lines waiting to be persisted. Admission
(engine/run_admission.py), execution (engine/run_execution.py) and upkeep
(engine/run_upkeep.py) each work on one `RunState`; engine/runs.py composes them."""

from __future__ import annotations

import logging
import secrets
import socket
from dataclasses import dataclass, field

import anyio

from engine.config import ServerConfig
from engine.run_logs import LogLine, RunLog, RunLogs
from engine.run_records import RunRecord, StepState, StepStatus, StoredLog
from engine.run_store import RunStore

log = logging.getLogger("sluice.runs")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The run manager's bounds and timings."""

    max_concurrent_runs: int = 4
    max_queued_runs: int = 100
    key_ttl_secs: float = 86_400.0  # how long an idempotency key names its run
    grace_secs: float = 30.0  # running runs get this long to finish on shutdown
    heartbeat_secs: float = 1.0  # the upkeep tick: heartbeats, progress, log flushing
    stale_secs: float = 15.0  # a shared store's run without a heartbeat this long is orphaned
    poll_secs: float = 1.0  # the dispatcher looks for queued runs at least this often
    log_capacity: int = 1_000  # lines kept in memory per run
    log_keep_secs: float = 300.0  # a finished run's buffer is kept this long
    persisted_log_lines: int = 2_000  # lines kept per run in the store

    @classmethod
    def of(cls, server: ServerConfig) -> RunSettings:
        """The settings `config.server` gives (`sluice serve` flags are applied to it)."""
        return cls(
            max_concurrent_runs=server.max_concurrent_runs,
            max_queued_runs=server.max_queued_runs,
            grace_secs=server.run_grace_seconds,
            key_ttl_secs=server.idempotency_ttl_seconds,
            stale_secs=server.run_stale_seconds,
            log_capacity=server.run_log_lines,
        )


class RunHooks:
    """Observability callbacks (the API wires metrics here); all optional no-ops."""

    def finished(self, status: str, reason: str | None, secs: float | None) -> None: ...

    def gauges(self, queued: int, running: int) -> None: ...

    def replayed(self) -> None: ...

    def deleted(self, run_id: str) -> None: ...


class RunProgress:
    """What an executor reports into: per-step progress, records written and log lines."""

    def __init__(self, record: RunRecord, buffer: RunLog) -> None:
        self.record = record
        self.buffer = buffer
        self._steps = {s.step_id: s for s in record.steps}

    def step(
        self, step_id: str, state: StepStatus | str, rows: int = 0, latency_ms: float | None = None
    ) -> None:
        state = StepStatus(state)
        current = self._steps.get(step_id)
        if current is None:
            current = self._steps[step_id] = StepState(step_id=step_id)
            self.record.steps.append(current)
        changed = current.state != state
        current.state, current.rows = state, rows
        if latency_ms is not None:
            current.latency_ms = round(latency_ms, 3)
        if changed:
            extra = (
                f", {rows} rows" if state not in (StepStatus.PENDING, StepStatus.RUNNING) else ""
            )
            lat = f" in {current.latency_ms:.0f} ms" if latency_ms is not None else ""
            self.buffer.append(f"step {step_id}: {state}{extra}{lat}")

    def log(self, message: str, level: str = "info") -> None:
        self.buffer.append(message, level)

    def records(self, n: int) -> None:
        self.record.records_written = n


@dataclass
class LiveRun:
    """A run executing in this process: its record (updated in place), cancel scope and the
    reason a cancel gives."""

    record: RunRecord
    progress: RunProgress
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_reason: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel it (a first reason sticks: a shutdown is not turned into a request)."""
        self.cancel_reason = self.cancel_reason or reason
        self.scope.cancel()


class RunState:
    def __init__(self, store: RunStore, settings: RunSettings, hooks: RunHooks) -> None:
        self.store = store
        self.settings = settings
        self.hooks = hooks
        self.owner = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self.logs = RunLogs(settings.log_capacity, settings.log_keep_secs, persist=self._spool)
        self.live: dict[str, LiveRun] = {}
        self.accepting = False
        self.stopped = anyio.Event()  # set when draining starts: SSE streams end on it
        self.wake = anyio.Event()  # set when a run is queued: the dispatcher looks at once
        self.queued = 0  # the last known number of queued runs (for the gauges)
        self._pending_logs: dict[str, list[StoredLog]] = {}

    def gauges(self) -> None:
        self.hooks.gauges(self.queued, len(self.live))

    def _spool(self, run_id: str, line: LogLine) -> None:
        self._pending_logs.setdefault(run_id, []).append(
            StoredLog(line.id, line.ts, line.level, line.message)
        )

    async def flush_logs(self) -> None:
        """Persist the spooled log lines (each run keeps its last `persisted_log_lines`)."""
        pending, self._pending_logs = self._pending_logs, {}
        for run_id, lines in pending.items():
            try:
                await self.store.append_logs(run_id, lines, self.settings.persisted_log_lines)
            except Exception:
                log.exception("could not persist logs of run %s", run_id)
