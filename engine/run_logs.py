"""Per-run log buffers: a bounded ring of lines, each with an increasing event id, so an SSE
reader can replay, resume after `Last-Event-ID`, and learn when it fell behind (`truncated`).

A buffer exists from submit, so a reader that connects before the run starts waits for lines
instead of getting `end`. Lines are also handed to a persist callback (the run store keeps a
bounded tail per run), so a restart does not lose what a run said.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio

DEFAULT_CAPACITY = 1_000


@dataclass(frozen=True, slots=True)
class LogLine:
    id: int
    ts: float
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class Tail:
    """What a reader gets: lines after its cursor, whether some were dropped before them,
    and whether the run has ended (no more lines will come)."""

    lines: list[LogLine]
    truncated: bool
    ended: bool


class RunLog:
    """One run's ring buffer. Writers never block; readers wait on an event."""

    def __init__(
        self,
        run_id: str,
        capacity: int = DEFAULT_CAPACITY,
        *,
        first_id: int = 1,
        persist: Callable[[str, LogLine], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.lines: deque[LogLine] = deque(maxlen=capacity)
        self.first_id = first_id  # earlier lines, if any, are only in the store
        self.next_id = first_id
        self.final_status: str | None = None
        self.ended_at: float | None = None
        self._persist = persist
        self._changed = anyio.Event()

    def append(self, message: str, level: str = "info") -> LogLine:
        line = LogLine(self.next_id, time.time(), level, message)
        self.next_id += 1
        self.lines.append(line)
        if self._persist is not None:
            self._persist(self.run_id, line)
        self._wake()
        return line

    def end(self, status: str) -> None:
        self.final_status = status
        self.ended_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def read(self, after: int) -> Tail:
        """Lines with id > `after`; `truncated` when some of those were already dropped."""
        oldest = self.lines[0].id if self.lines else self.next_id
        truncated = after + 1 < oldest
        lines = [ln for ln in self.lines if ln.id > after]
        return Tail(lines, truncated, self.final_status is not None)

    async def wait(self, after: int) -> None:
        """Return when a line past `after` exists or the run ended (callers bound it with
        move_on_after, to send keep-alives)."""
        if self.next_id - 1 > after or self.final_status is not None:
            return
        await self._changed.wait()


class RunLogs:
    """Every live run's buffer, kept for `keep_secs` after the run ends, then dropped (the
    store still holds the persisted tail)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        keep_secs: float = 300.0,
        persist: Callable[[str, LogLine], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.keep_secs = keep_secs
        self.persist = persist
        self.buffers: dict[str, RunLog] = {}

    def open(self, run_id: str, first_id: int = 1) -> RunLog:
        buf = self.buffers.get(run_id)
        if buf is None:
            buf = self.buffers[run_id] = RunLog(
                run_id, self.capacity, first_id=first_id, persist=self.persist
            )
        return buf

    def get(self, run_id: str) -> RunLog | None:
        return self.buffers.get(run_id)

    def drop(self, run_id: str) -> None:
        buf = self.buffers.pop(run_id, None)
        if buf is not None and buf.final_status is None:
            buf.end("deleted")

    def sweep(self) -> list[str]:
        """Drop buffers whose run ended more than keep_secs ago."""
        now = time.monotonic()
        gone = [
            rid
            for rid, b in self.buffers.items()
            if b.ended_at is not None and now - b.ended_at > self.keep_secs
        ]
        for rid in gone:
            del self.buffers[rid]
        return gone
