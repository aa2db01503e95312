"""The run manager: admission (queue bounds, idempotent replays), a dispatcher that claims
queued runs from the durable store, per-run cancel scopes and timeouts, live progress, logs,
crash recovery and graceful drain.

The queue is the store: a submitted run is a `queued` row, and a dispatcher claims the oldest
one (a conditional UPDATE, one winner) whenever a slot is free. So queued runs survive a crash
and, on PostgreSQL, any process sharing the store may run them. What executes a run is an
`Executor` callable (the API passes QueryService.federated); the manager only knows records.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from connectors.errors import SluiceError
from engine.run_logs import LogLine, RunLog, RunLogs
from engine.run_store import (
    RESTART_MESSAGE,
    IdempotencyConflict,
    RunError,
    RunRecord,
    RunStatus,
    RunStore,
    StepState,
    StepStatus,
    StoredLog,
    new_run_id,
)

log = logging.getLogger("sluice.runs")


class QueueFull(SluiceError):
    """Raised when a submit finds the run queue at its bound (HTTP 429 with Retry-After)."""

    code = "queue_full"
    status = 429

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the run queue is full ({queued} queued, limit {limit})",
            suggestion=f"retry after {retry_after}s, or raise --max-queued-runs",
            details={"queued": queued, "max_queued_runs": limit},
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class NotAccepting(SluiceError):
    """Raised when a submit arrives while the server drains for shutdown (HTTP 503)."""

    code = "shutting_down"
    status = 503

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down and accepts no new runs",
            suggestion="submit again to another server or after the restart",
            headers={"Retry-After": "5"},
        )


class RunNotFound(SluiceError, LookupError):
    """Raised when a run_id is unknown (never existed or was deleted)."""

    code = "run_not_found"
    status = 404

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}", suggestion="GET /v1/runs lists the known runs")


class RunNotTerminal(SluiceError):
    """Raised when DELETE targets a run that is still queued or running (HTTP 409)."""

    code = "run_not_terminal"
    status = 409

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id} is {status}; only finished runs can be deleted",
            suggestion=f"POST /v1/runs/{run_id}/cancel first",
        )


@dataclass(slots=True)
class RunOutcome:
    records_written: int = 0
    result_id: str | None = None


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


Executor = Callable[[RunRecord, RunProgress], Awaitable[RunOutcome]]


class RunHooks:
    """Observability callbacks (the API wires metrics here); all optional no-ops."""

    def finished(self, status: str, reason: str | None, secs: float | None) -> None: ...

    def gauges(self, queued: int, running: int) -> None: ...

    def replayed(self) -> None: ...

    def deleted(self, run_id: str) -> None: ...


def payload_hash(config: str, options: dict[str, Any]) -> str:
    """sha256 over the canonical config JSON plus the options that change what runs."""
    blob = msgspec.json.encode(
        {"config": msgspec.json.decode(config), "options": options}, order="sorted"
    )
    return hashlib.sha256(blob).hexdigest()


def run_digest(
    config: str,
    *,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    timeout_secs: float | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """The idempotency digest of a submit: its config plus every option that changes it."""
    return payload_hash(
        config,
        {"name": name, "labels": labels or {}, "timeout_secs": timeout_secs, **(options or {})},
    )


@dataclass
class _Live:
    record: RunRecord
    progress: RunProgress
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_reason: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class RunManager:
    """Owns the runs of one server process. Start it with `await tg.start(manager.serve)`."""

    def __init__(
        self,
        store: RunStore,
        execute: Executor,
        *,
        max_concurrent_runs: int = 4,
        max_queued_runs: int = 100,
        key_ttl_secs: float = 86_400.0,
        grace_secs: float = 30.0,
        heartbeat_secs: float = 1.0,
        stale_secs: float = 15.0,
        poll_secs: float = 1.0,
        log_capacity: int = 1_000,
        log_keep_secs: float = 300.0,
        persisted_log_lines: int = 2_000,
        hooks: RunHooks | None = None,
    ) -> None:
        self.store = store
        self.execute = execute
        self.max_concurrent = max_concurrent_runs
        self.max_queued = max_queued_runs
        self.key_ttl = key_ttl_secs
        self.grace = grace_secs
        self.heartbeat_secs = heartbeat_secs
        self.stale_secs = stale_secs
        self.poll_secs = poll_secs
        self.persisted_log_lines = persisted_log_lines
        self.hooks = hooks or RunHooks()
        self.owner = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self.logs = RunLogs(log_capacity, log_keep_secs, persist=self._persist_line)
        self.live: dict[str, _Live] = {}
        self.accepting = False
        self.stopped = anyio.Event()  # set when draining starts: SSE streams end on it
        self._wake = anyio.Event()
        self._pending_logs: dict[str, list[StoredLog]] = {}
        self._slots = anyio.Semaphore(max_concurrent_runs)
        self._tg: anyio.abc.TaskGroup | None = None
        self._queued = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover, then dispatch queued runs until cancelled. Call `drain()` BEFORE
        cancelling to give running runs their grace period: a plain cancel reaches them at
        once (they end cancelled, reason shutdown); queued runs stay queued either way."""
        await self.store.open()
        try:
            await self._recover()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._dispatch)
                tg.start_soon(self._housekeeping)
                self.accepting = True
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.drain()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush_logs()
                await self.store.close()

    async def drain(self, grace: float | None = None) -> None:
        """Stop admitting and claiming; give running runs `grace` seconds, then cancel the
        rest (status cancelled, reason shutdown). Queued runs stay queued for the next start.
        Safe to call more than once (the SIGTERM hook and the lifespan both may)."""
        self.accepting = False
        self.stopped.set()
        grace = self.grace if grace is None else grace
        with anyio.move_on_after(grace):
            for live in list(self.live.values()):
                await live.done.wait()
        for live in list(self.live.values()):
            if live.cancel_reason is None:
                live.cancel_reason = "shutdown"
            live.scope.cancel()
        for live in list(self.live.values()):
            await live.done.wait()

    @property
    def draining(self) -> bool:
        return self.stopped.is_set()

    # -- admission ---------------------------------------------------------------------------
    async def submit(
        self,
        config: str,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        timeout_secs: float | None = None,
        idempotency_key: str | None = None,
        doctor_report: list[dict[str, Any]] | None = None,
        principal: str | None = None,
        options: dict[str, Any] | None = None,
        steps: Sequence[str] = (),
    ) -> tuple[RunRecord, bool]:
        """Queue a run of `config` (canonical JSON). Returns (run, created); a replay of an
        idempotency key with the same payload returns the original run, checked BEFORE the
        queue bound (a replay is never a 429).

        Raises:
            IdempotencyConflict: the key was used with a different payload.
            QueueFull: too many queued runs (carries retry_after).
            NotAccepting: the server is draining.
        """
        digest = run_digest(
            config, name=name, labels=labels, timeout_secs=timeout_secs, options=options
        )
        if idempotency_key is not None:
            existing = await self.replay(idempotency_key, digest)
            if existing is not None:
                return existing, False
        if not self.accepting:
            raise NotAccepting
        queued = await self.store.count(RunStatus.QUEUED)
        if queued >= self.max_queued:
            raise QueueFull(queued, self.max_queued, await self.retry_after(queued))
        record = RunRecord(
            run_id=new_run_id(),
            status=RunStatus.QUEUED,
            submitted_at=time.time(),
            config=config,
            payload_hash=digest,
            name=name,
            labels=labels or {},
            timeout_secs=timeout_secs,
            idempotency_key=idempotency_key,
            doctor_report=doctor_report,
            principal=principal,
            steps=[StepState(step_id=s) for s in steps],
        )
        # the buffer exists from submit, so an early SSE reader waits for lines
        buf = self.logs.open(record.run_id)
        try:
            run, created = await self.store.insert(record, key_ttl=self.key_ttl)
        except BaseException:
            self.logs.drop(record.run_id)
            raise
        if not created:
            self.logs.drop(record.run_id)
            self.hooks.replayed()
            return run, False
        buf.append(f"run queued{f' ({name})' if name else ''}")
        self._queued = queued + 1
        self.hooks.gauges(self._queued, len(self.live))
        self._wake.set()
        return run, True

    async def replay(self, idempotency_key: str, digest: str) -> RunRecord | None:
        """The run a live key already names when the payload matches; None when the key is
        free. Raises IdempotencyConflict for another payload."""
        found = await self.store.find_key(idempotency_key)
        if found is None:
            return None
        run_id, stored = found
        if stored != digest:
            raise IdempotencyConflict(idempotency_key, run_id)
        existing = await self.store.get(run_id)
        if existing is not None:
            self.hooks.replayed()
            existing = self.live[run_id].record if run_id in self.live else existing
        return existing

    async def retry_after(self, queued: int | None = None) -> int:
        """Seconds until a queue slot frees: mean recent run time x queue depth / slots."""
        if queued is None:
            queued = await self.store.count("queued")
        durations = await self.store.recent_durations()
        mean = sum(durations) / len(durations) if durations else 5.0
        return max(1, math.ceil(mean * max(1, queued - self.max_queued + 1) / self.max_concurrent))

    # -- reading -----------------------------------------------------------------------------
    async def get(self, run_id: str) -> RunRecord:
        live = self.live.get(run_id)
        if live is not None:
            return live.record
        record = await self.store.get(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record

    async def list(self, **filters: Any) -> builtins.list[RunRecord]:
        runs = await self.store.list(**filters)
        return [self.live[r.run_id].record if r.run_id in self.live else r for r in runs]

    async def logs_after(self, run_id: str, after: int) -> builtins.list[StoredLog]:
        """Persisted lines (for a run whose in-memory buffer is gone or on another process)."""
        await self._flush_logs()
        return await self.store.logs(run_id, after)

    # -- verbs -------------------------------------------------------------------------------
    async def cancel(self, run_id: str) -> tuple[RunRecord, bool]:
        """Cancel a run. Returns (run, accepted): accepted False when already terminal.
        A queued run is cancelled at once; a running one when its cancel scope unwinds."""
        live = self.live.get(run_id)
        if live is not None:
            live.cancel_reason = live.cancel_reason or "cancelled"
            live.scope.cancel()
            return live.record, True
        now = time.time()
        error = RunError(
            code="cancelled", message="cancelled before it started", reason="cancelled"
        )
        if await self.store.update(
            run_id,
            only_status=(RunStatus.QUEUED,),
            status=RunStatus.CANCELLED,
            finished_at=now,
            error=error,
        ):
            buf = self.logs.open(run_id, await self.store.last_log_seq(run_id) + 1)
            buf.append("run cancelled while queued")
            buf.end(RunStatus.CANCELLED)
            await self._flush_logs()
            self.hooks.finished(RunStatus.CANCELLED, "cancelled", None)
            return await self.get(run_id), True
        live = self.live.get(run_id)  # the dispatcher may have claimed it meanwhile
        if live is not None:
            return await self.cancel(run_id)
        record = await self.get(run_id)
        if record.status == RunStatus.RUNNING:  # owned by another process sharing the store
            await self.store.update(run_id, only_status=(RunStatus.RUNNING,), cancel_requested=True)
            return record, True
        return record, False

    async def delete(self, run_id: str) -> None:
        record = await self.get(run_id)
        if not record.terminal or run_id in self.live:
            raise RunNotTerminal(run_id, record.status)
        if not await self.store.delete(run_id):
            raise RunNotTerminal(run_id, record.status)
        self.logs.drop(run_id)
        self.hooks.deleted(run_id)

    # -- execution ---------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        assert self._tg is not None
        while self.accepting:
            await self._slots.acquire()
            record = None
            try:
                while self.accepting and record is None:
                    record = await self.store.claim_next(self.owner)
                    if record is None:
                        with anyio.move_on_after(self.poll_secs):
                            await self._wake.wait()
                        self._wake = anyio.Event()
            finally:
                if record is None:
                    self._slots.release()
            if record is None:
                return
            await self._start(record)

    async def _start(self, record: RunRecord) -> None:
        assert self._tg is not None
        buf = self.logs.get(record.run_id)
        if buf is None:  # queued by another process or before a restart: continue its ids
            await self._flush_logs()
            buf = self.logs.open(record.run_id, await self.store.last_log_seq(record.run_id) + 1)
        live = _Live(record=record, progress=RunProgress(record, buf))
        self.live[record.run_id] = live
        self._tg.start_soon(self._run, live)

    async def _run(self, live: _Live) -> None:
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
            f"run started on {self.owner}"
            + (f" (timeout {record.timeout_secs:g}s)" if record.timeout_secs else "")
        )
        self.hooks.gauges(self._queued, len(self.live))
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

    async def _finish(self, live: _Live, status: str, error: RunError | None, secs: float) -> None:
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
            await self.store.update(
                record.run_id,
                status=status,
                error=error,
                finished_at=finished,
                steps=record.steps,
                records_written=record.records_written,
                heartbeat_at=time.time(),
            )
            await self._flush_logs()
        except Exception:
            log.exception("could not record the end of run %s", record.run_id)
        # the live record turns terminal only once the store says so (DELETE relies on it)
        record.status, record.error, record.finished_at = status, error, finished
        buf.end(status)
        self.live.pop(record.run_id, None)
        live.done.set()
        self._slots.release()
        self.hooks.finished(status, error.reason if error else None, secs)
        self.hooks.gauges(self._queued, len(self.live))

    # -- durability --------------------------------------------------------------------------
    async def _recover(self) -> None:
        stale = None if self.store.exclusive else time.time() - self.stale_secs
        for record in await self.store.orphaned(self.owner, stale):
            error = RunError(
                code="server_restart", reason="server_restart", message=RESTART_MESSAGE
            )
            if not await self.store.update(
                record.run_id,
                only_status=(RunStatus.RUNNING,),
                status=RunStatus.FAILED,
                error=error,
                finished_at=time.time(),
            ):
                continue
            seq = await self.store.last_log_seq(record.run_id) + 1
            await self.store.append_logs(
                record.run_id,
                [StoredLog(seq, time.time(), "error", RESTART_MESSAGE)],
                self.persisted_log_lines,
            )
            log.warning("run %s: %s", record.run_id, RESTART_MESSAGE)
            self.hooks.finished(RunStatus.FAILED, "server_restart", None)

    def _persist_line(self, run_id: str, line: LogLine) -> None:
        self._pending_logs.setdefault(run_id, []).append(
            StoredLog(line.id, line.ts, line.level, line.message)
        )

    async def _flush_logs(self) -> None:
        pending, self._pending_logs = self._pending_logs, {}
        for run_id, lines in pending.items():
            try:
                await self.store.append_logs(run_id, lines, self.persisted_log_lines)
            except Exception:
                log.exception("could not persist logs of run %s", run_id)

    async def _housekeeping(self) -> None:
        """Heartbeat and progress of our runs, remote cancel requests, orphan recovery on a
        shared store, log flushing, expired keys and buffers, and the queue gauge."""
        ticks = 0
        # a shared store's orphans are found within ~stale_secs * 1.5
        sweep_every = max(1, int(self.stale_secs / self.heartbeat_secs / 2))
        while True:
            await anyio.sleep(self.heartbeat_secs)
            ticks += 1
            try:
                await self._flush_logs()
                now = time.time()
                for live in list(self.live.values()):
                    r = live.record
                    await self.store.update(
                        r.run_id,
                        only_status=(RunStatus.RUNNING,),
                        heartbeat_at=now,
                        steps=r.steps,
                        records_written=r.records_written,
                    )
                if self.live:
                    for r in await self.store.owned_running(self.owner):
                        if r.cancel_requested and r.run_id in self.live:
                            await self.cancel(r.run_id)
                self._queued = await self.store.count(RunStatus.QUEUED)
                self.hooks.gauges(self._queued, len(self.live))
                if self._queued:
                    self._wake.set()
                if ticks % sweep_every == 0:
                    if not self.store.exclusive:
                        await self._recover()
                    await self.store.expire_keys()
                    self.logs.sweep()
            except Exception:
                log.exception("run housekeeping failed")
