"""The run manager: one per server process, composed of the runs code's concerns over one
shared `RunState` (engine/run_state.py: settings, hooks, live runs, log buffers):

- admission (engine/run_admission.py): idempotent replays, the queue bound, draining;
- execution (engine/run_execution.py): the dispatcher claiming queued runs into slots, cancel
  scopes and timeouts, how a run ended;
- upkeep (engine/run_upkeep.py): heartbeats, remote cancels, orphan recovery, log persistence;
- durability (engine/run_store.py and its two backends): records, keys and log tails.

The queue is the store: a submitted run is a `queued` row, so queued runs survive a crash and,
on PostgreSQL, any process sharing the store may run them. This module holds the lifecycle
(serve, drain), reading and the verbs (cancel, delete).
"""

from __future__ import annotations

import builtins
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from engine.run_admission import Admission
from engine.run_errors import RunNotFound, RunNotTerminal
from engine.run_execution import Dispatcher, Executor
from engine.run_logs import RunLogs
from engine.run_records import RunError, RunRecord, RunStatus, StoredLog
from engine.run_state import LiveRun, RunHooks, RunSettings, RunState
from engine.run_store import RunStore
from engine.run_upkeep import Upkeep


class RunManager:
    """Owns the runs of one server process. Start it with `await tg.start(manager.serve)`."""

    def __init__(
        self,
        store: RunStore,
        execute: Executor,
        settings: RunSettings | None = None,
        *,
        hooks: RunHooks | None = None,
    ) -> None:
        self.state = RunState(store, settings or RunSettings(), hooks or RunHooks())
        self.execute = execute
        self.admission = Admission(self.state)
        self.upkeep = Upkeep(self.state)
        # admission is the admission module's, unwrapped
        self.submit = self.admission.submit
        self.replay = self.admission.replay
        self.retry_after = self.admission.retry_after

    @property
    def store(self) -> RunStore:
        return self.state.store

    @property
    def logs(self) -> RunLogs:
        return self.state.logs

    @property
    def live(self) -> dict[str, LiveRun]:
        return self.state.live

    @property
    def accepting(self) -> bool:
        return self.state.accepting

    @property
    def stopped(self) -> anyio.Event:
        """Set when draining starts: SSE streams end on it."""
        return self.state.stopped

    @property
    def draining(self) -> bool:
        return self.state.stopped.is_set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover, then dispatch queued runs until cancelled. Call `drain()` BEFORE
        cancelling to give running runs their grace period: a plain cancel reaches them at
        once (they end cancelled, reason shutdown); queued runs stay queued either way."""
        state = self.state
        await state.store.open()
        try:
            await self.upkeep.recover()
            async with anyio.create_task_group() as tg:
                tg.start_soon(Dispatcher(state, self.execute, tg).dispatch)
                tg.start_soon(self.upkeep.serve)
                state.accepting = True
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.drain()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await state.flush_logs()
                await state.store.close()

    async def drain(self, grace: float | None = None) -> None:
        """Stop admitting and claiming; give running runs `grace` seconds, then cancel the
        rest (status cancelled, reason shutdown). Queued runs stay queued for the next start.
        Safe to call more than once (the SIGTERM hook and the lifespan both may)."""
        state = self.state
        state.accepting = False
        state.stopped.set()
        grace = state.settings.grace_secs if grace is None else grace
        with anyio.move_on_after(grace):
            for live in list(state.live.values()):
                await live.done.wait()
        for live in list(state.live.values()):
            live.cancel("shutdown")
        for live in list(state.live.values()):
            await live.done.wait()

    # -- reading -----------------------------------------------------------------------------
    async def get(self, run_id: str) -> RunRecord:
        live = self.state.live.get(run_id)
        if live is not None:
            return live.record
        record = await self.state.store.get(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record

    async def list(self, **filters: Any) -> builtins.list[RunRecord]:
        runs = await self.state.store.list(**filters)
        return [self._current(r) for r in runs]

    async def logs_after(self, run_id: str, after: int) -> builtins.list[StoredLog]:
        """Persisted lines (for a run whose in-memory buffer is gone or on another process)."""
        await self.state.flush_logs()
        return await self.state.store.logs(run_id, after)

    # -- verbs -------------------------------------------------------------------------------
    async def cancel(self, run_id: str) -> tuple[RunRecord, bool]:
        """Cancel a run. Returns (run, accepted): accepted False when already terminal.
        A queued run is cancelled at once; a running one when its cancel scope unwinds."""
        live = self.state.live.get(run_id)
        if live is not None:
            live.cancel()
            return live.record, True
        now = time.time()
        error = RunError(
            code="cancelled", message="cancelled before it started", reason="cancelled"
        )
        if await self.state.store.update(
            run_id,
            only_status=(RunStatus.QUEUED,),
            status=RunStatus.CANCELLED,
            finished_at=now,
            error=error,
        ):
            buf = self.state.logs.open(run_id, await self.state.store.last_log_seq(run_id) + 1)
            buf.append("run cancelled while queued")
            buf.end(RunStatus.CANCELLED)
            await self.state.flush_logs()
            self.state.hooks.finished(RunStatus.CANCELLED, "cancelled", None)
            return await self.get(run_id), True
        live = self.state.live.get(run_id)  # the dispatcher may have claimed it meanwhile
        if live is not None:
            return await self.cancel(run_id)
        record = await self.get(run_id)
        if record.status == RunStatus.RUNNING:  # owned by another process sharing the store
            await self.state.store.update(
                run_id, only_status=(RunStatus.RUNNING,), cancel_requested=True
            )
            return record, True
        return record, False

    async def delete(self, run_id: str) -> None:
        record = await self.get(run_id)
        if not record.terminal or run_id in self.state.live:
            raise RunNotTerminal(run_id, record.status)
        if not await self.state.store.delete(run_id):
            raise RunNotTerminal(run_id, record.status)
        self.state.logs.drop(run_id)
        self.state.hooks.deleted(run_id)

    def _current(self, record: RunRecord) -> RunRecord:
        """The live record of a run executing here (fresher than the stored one)."""
        live = self.state.live.get(record.run_id)
        return live.record if live is not None else record
