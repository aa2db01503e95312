"""What a run is: its record as stored, its statuses (the one list of them), its steps' states,
its log lines, its id and how an idempotency key is scoped. Every runs module builds on these."""

from __future__ import annotations

import secrets
import threading
import time
from enum import StrEnum
from typing import Any

import msgspec


class RunStatus(StrEnum):
    """A run's status, the one list of them (the API, the CLI and the client use it)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """A run step's state (`truncated`: finished at its row cap)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    TRUNCATED = "truncated"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
RESTART_MESSAGE = "the server stopped while this run was running; marked failed (server_restart)"


class StepState(msgspec.Struct, kw_only=True):
    step_id: str
    state: StepStatus = StepStatus.PENDING
    rows: int = 0
    latency_ms: float | None = None


class RunError(msgspec.Struct, kw_only=True):
    code: str
    message: str
    reason: str | None = None  # timeout, server_restart, shutdown, cancelled, ...


class RunRecord(msgspec.Struct, kw_only=True):
    """One run as stored. Times are epoch seconds; `config` is the canonical JSON of the
    federated query, `payload_hash` what idempotent replays are compared on."""

    run_id: str
    status: str
    submitted_at: float
    config: str
    payload_hash: str
    name: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    records_written: int = 0
    steps: list[StepState] = msgspec.field(default_factory=list)
    error: RunError | None = None
    idempotency_key: str | None = None
    doctor_report: list[dict[str, Any]] | None = None
    timeout_secs: float | None = None
    principal: str | None = None
    owner: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class StoredLog(msgspec.Struct, frozen=True):
    seq: int
    ts: float
    level: str
    message: str


_KEY_SEP = "\x1f"  # between the principal and the client's key in a stored key


def scoped_key(principal: str | None, key: str) -> str:
    """An idempotency key as stored: per principal, so one principal's key never finds (or
    conflicts with, or names) another's run."""
    return f"{principal or ''}{_KEY_SEP}{key}"


def client_key(stored: str) -> str:
    """The key as its client sent it (records stored before scoping have no separator)."""
    return stored.split(_KEY_SEP, 1)[1] if _KEY_SEP in stored else stored


_last_id = 0
_id_lock = threading.Lock()


def new_run_id() -> str:
    """32 hex chars: 48-bit milliseconds then 80 random bits (uuid7-like), strictly
    increasing within a process, so ids sort by submission time."""
    global _last_id
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value
    return f"{value:032x}"
