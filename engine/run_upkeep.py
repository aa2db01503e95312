"""Upkeep of the runs of this process against the store, so that nothing is lost and nothing
stays `running` forever: heartbeats and progress of our runs, cancel requests that reach us
through a shared store, recovery of the runs of dead processes (at start, and periodically on a
shared store), persisting log lines, and expiring idempotency keys and finished log buffers."""

from __future__ import annotations

import logging
import time

import anyio

from engine.run_records import RESTART_MESSAGE, RunError, RunStatus, StoredLog
from engine.run_state import RunState

log = logging.getLogger("sluice.runs")


class Upkeep:
    """Runs beside the dispatcher for the life of the manager (`serve`); `recover` at start."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    async def recover(self) -> None:
        """Fail the runs a dead process left `running`: every one not ours in an exclusive
        store, else those whose heartbeat stopped. A shared store is swept every heartbeat
        with a threshold one heartbeat short of `stale_secs` (never under two), so such a
        run is failed at most `stale_secs` after its last heartbeat."""
        state, store, settings = self.state, self.state.store, self.state.settings
        age = max(settings.stale_secs - settings.heartbeat_secs, 2 * settings.heartbeat_secs)
        stale = None if store.exclusive else time.time() - age
        for record in await store.orphaned(state.owner, stale):
            error = RunError(
                code="server_restart", reason="server_restart", message=RESTART_MESSAGE
            )
            if not await store.update(
                record.run_id,
                only_status=(RunStatus.RUNNING,),
                status=RunStatus.FAILED,
                error=error,
                finished_at=time.time(),
            ):
                continue
            seq = await store.last_log_seq(record.run_id) + 1
            await store.append_logs(
                record.run_id,
                [StoredLog(seq, time.time(), "error", RESTART_MESSAGE)],
                state.settings.persisted_log_lines,
            )
            log.warning("run %s: %s", record.run_id, RESTART_MESSAGE)
            state.hooks.finished(RunStatus.FAILED, "server_restart", None)

    async def serve(self) -> None:
        """Heartbeat and progress of our runs, remote cancel requests, orphan recovery on a
        shared store, log flushing, expired keys and buffers, and the queue gauge."""
        state, store, settings = self.state, self.state.store, self.state.settings
        ticks = 0
        sweep_every = max(1, int(settings.stale_secs / settings.heartbeat_secs / 2))
        while True:
            await anyio.sleep(settings.heartbeat_secs)
            ticks += 1
            try:
                await state.flush_logs()
                now = time.time()
                for live in list(state.live.values()):
                    r = live.record
                    await store.update(
                        r.run_id,
                        only_status=(RunStatus.RUNNING,),
                        heartbeat_at=now,
                        steps=r.steps,
                        records_written=r.records_written,
                    )
                if state.live:
                    for r in await store.owned_running(state.owner):
                        mine = state.live.get(r.run_id)
                        if r.cancel_requested and mine is not None:
                            mine.cancel()
                state.queued = await store.count(RunStatus.QUEUED)
                state.gauges()
                if state.queued:
                    state.wake.set()
                if not store.exclusive:
                    await self.recover()
                if ticks % sweep_every == 0:
                    await store.expire_keys()
                    state.logs.sweep()
            except Exception:
                log.exception("run housekeeping failed")
