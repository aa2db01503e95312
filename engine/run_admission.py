"""Admission of a run: the idempotency digest of a submit, replays of a key (checked before
the queue bound, so a replay is never a 429), the queue bound with its Retry-After estimate,
and refusal while draining. An admitted run is a `queued` row in the store."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.run_errors import IdempotencyConflict, NotAccepting, QueueFull
from engine.run_records import RunRecord, RunStatus, StepState, StoredLog, new_run_id
from engine.run_state import RunState


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


class Admission:
    """Admits runs into the store's queue."""

    def __init__(self, state: RunState) -> None:
        self.state = state

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
        state = self.state
        if not state.accepting:
            raise NotAccepting
        queued = await state.store.count(RunStatus.QUEUED)
        limit = state.settings.max_queued_runs
        if queued >= limit:
            raise QueueFull(queued, limit, await self.retry_after(queued))
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
        # on an exclusive store the buffer exists from submit, so an early SSE reader waits
        # for lines; on a shared one any process may run it, so the queued line goes to the
        # store at once (the runner continues its numbering) and only a runner keeps a buffer
        buf = state.logs.open(record.run_id) if state.store.exclusive else None
        try:
            run, created = await state.store.insert(record, key_ttl=state.settings.key_ttl_secs)
        except BaseException:
            state.logs.drop(record.run_id)
            raise
        if not created:
            state.logs.drop(record.run_id)
            state.hooks.replayed()
            return run, False
        queued_line = f"run queued{f' ({name})' if name else ''}"
        if buf is not None:
            buf.append(queued_line)
        else:
            await state.store.append_logs(
                record.run_id,
                [StoredLog(1, time.time(), "info", queued_line)],
                state.settings.persisted_log_lines,
            )
        state.queued = queued + 1
        state.gauges()
        state.wake.set()
        return run, True

    async def replay(self, idempotency_key: str, digest: str) -> RunRecord | None:
        """The run a live key already names when the payload matches; None when the key is
        free. Raises IdempotencyConflict for another payload."""
        found = await self.state.store.find_key(idempotency_key)
        if found is None:
            return None
        run_id, stored = found
        if stored != digest:
            raise IdempotencyConflict(idempotency_key, run_id)
        existing = await self.state.store.get(run_id)
        if existing is not None:
            self.state.hooks.replayed()
            live = self.state.live.get(run_id)
            existing = live.record if live is not None else existing
        return existing

    async def retry_after(self, queued: int | None = None) -> int:
        """Seconds until a queue slot frees: mean recent run time x queue depth / slots."""
        store, settings = self.state.store, self.state.settings
        if queued is None:
            queued = await store.count(RunStatus.QUEUED)
        durations = await store.recent_durations()
        mean = sum(durations) / len(durations) if durations else 5.0
        depth = max(1, queued - settings.max_queued_runs + 1)
        return max(1, math.ceil(mean * depth / settings.max_concurrent_runs))
