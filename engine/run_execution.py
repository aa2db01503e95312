"""Execution of runs in this process: a dispatcher claims the oldest queued run from the
store (a conditional UPDATE, one winner) whenever one of `max_concurrent_runs` slots is free,
runs it under its cancel scope and timeout through an `Executor` (the API passes
QueryService.federated; this code only knows records), and records how it ended."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from connectors.errors import SluiceError
from engine.run_records import RunError, RunRecord, RunStatus, StepStatus
from engine.run_state import LiveRun, RunProgress, RunState

log = logging.getLogger("sluice.runs")


@dataclass(slots=True)
class RunOutcome:
    records_written: int = 0
    result_id: str | None = None


Executor = Callable[[RunRecord, RunProgress], Awaitable[RunOutcome]]


class Dispatcher:
    """Claims queued runs into free slots and executes them; `dispatch` runs in `tg`."""

    def __init__(self, state: RunState, execute: Executor, tg: TaskGroup) -> None:
        self.state = state
        self.execute = execute
        self.tg = tg
        self.slots = anyio.Semaphore(state.settings.max_concurrent_runs)

    async def dispatch(self) -> None:
        while self.state.accepting:
            await self.slots.acquire()
            record = None
            try:
                while self.state.accepting and record is None:
                    record = await self.state.store.claim_next(self.state.owner)
                    if record is None:
                        with anyio.move_on_after(self.state.settings.poll_secs):
                            await self.state.wake.wait()
                        self.state.wake = anyio.Event()
            finally:
                if record is None:
                    self.slots.release()
            if record is None:
                return
            await self._start(record)

    async def _start(self, record: RunRecord) -> None:
        buf = self.state.logs.get(record.run_id)
        if buf is None:  # queued by another process or before a restart: continue its ids
            await self.state.flush_logs()
            buf = self.state.logs.open(
                record.run_id, await self.state.store.last_log_seq(record.run_id) + 1
            )
        live = LiveRun(record=record, progress=RunProgress(record, buf))
        self.state.live[record.run_id] = live
        self.tg.start_soon(self._run, live)

    async def _run(self, live: LiveRun) -> None:
        record, buf = live.record, live.progress.buffer
        started = time.monotonic()
        # anything that unwinds us without an answer (the host cancelled) is a shutdown
        status = RunStatus.CANCELLED
        error: RunError | None = RunError(
            code="cancelled",
            reason="shutdown",
            message="cancelled: the server shut down before the run finished",
        )
        buf.append(
            f"run started on {self.state.owner}"
            + (f" (timeout {record.timeout_secs:g}s)" if record.timeout_secs else "")
        )
        self.state.gauges()
        try:
            with live.scope:
                deadline = (
                    anyio.fail_after(record.timeout_secs)
                    if record.timeout_secs
                    else contextlib.nullcontext()
                )
                with deadline:
                    outcome = await self.execute(record, live.progress)
                record.records_written = outcome.records_written
                status, error = RunStatus.COMPLETED, None
            if live.scope.cancelled_caught:
                reason = live.cancel_reason or "cancelled"
                status = RunStatus.CANCELLED
                error = RunError(
                    code="cancelled",
                    reason=reason,
                    message="cancelled by request"
                    if reason == "cancelled"
                    else "cancelled: the server shut down before the run finished",
                )
        except TimeoutError as exc:
            status = RunStatus.FAILED
            # without timeout_secs the deadline was not the run's own (a bare TimeoutError
            # from below): say so rather than fail formatting a missing number
            limit = (
                f"the run exceeded timeout_secs={record.timeout_secs:g}"
                if record.timeout_secs is not None
                else f"a step timed out: {exc or 'no detail'}"
            )
            error = RunError(code="run_timeout", reason="timeout", message=limit)
        except SluiceError as exc:
            status = RunStatus.FAILED
            error = RunError(
                code=exc.code, message=exc.message, reason=getattr(exc, "reason", None) or exc.code
            )
        except Exception as exc:
            log.exception("run %s failed", record.run_id)
            status = RunStatus.FAILED
            error = RunError(
                code="internal_error",
                reason="internal_error",
                message=f"{type(exc).__name__}: {exc}",
            )
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(live, status, error, time.monotonic() - started)

    async def _finish(
        self, live: LiveRun, status: str, error: RunError | None, secs: float
    ) -> None:
        record, buf = live.record, live.progress.buffer
        for step in record.steps:
            if step.state in (StepStatus.PENDING, StepStatus.RUNNING):
                step.state = (
                    StepStatus.CANCELLED
                    if status == RunStatus.CANCELLED
                    else (StepStatus.FAILED if status == RunStatus.FAILED else step.state)
                )
        finished = time.time()
        if error is not None:
            buf.append(f"run {status}: {error.message}", "error")
        else:
            buf.append(f"run completed: {record.records_written} records in {secs:.3f}s")
        try:
            await self.state.store.update(
                record.run_id,
                status=status,
                error=error,
                finished_at=finished,
                steps=record.steps,
                records_written=record.records_written,
                heartbeat_at=time.time(),
            )
            await self.state.flush_logs()
        except Exception:
            log.exception("could not record the end of run %s", record.run_id)
        # the live record turns terminal only once the store says so (DELETE relies on it)
        record.status, record.error, record.finished_at = status, error, finished
        buf.end(status)
        self.state.live.pop(record.run_id, None)
        live.done.set()
        self.slots.release()
        self.state.hooks.finished(status, error.reason if error else None, secs)
        self.state.gauges()
