"""The process's memory budget, the shares DuckDB gets of it, and peak RSS while work runs.

`limits.memory_budget` is what the whole process should stay within. DuckDB's `memory_limit`
covers its buffer manager only (measured: Arrow ingest overshoots it 2.3x at 1 GB), so the
budget is split, never handed to DuckDB whole:

- a quarter stays with the process itself (Python, Arrow batches in flight between the steps
  and the writer, Parquet writers' row groups);
- of the rest, a quarter is the shared sink's `memory_limit` (every request's small step
  tables, and the merges of requests that did not spill);
- the remainder is the merge pool: a request whose steps spilled to Parquet merges in a
  DuckDB of its own whose `memory_limit` is a grant from the pool, so concurrent large merges
  never add up past it (a merge takes what is free, at least `MIN_GRANT`, else waits).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

MiB = 1024**2
MIN_GRANT = 64 * MiB  # below this a merge waits for another to finish rather than thrash
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
# the units DuckDB itself accepts for memory_limit and max_temp_directory_size
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]([iI]?[bB])?|[bB])?\s*$"
_SIZE = re.compile(SIZE_PATTERN)


def parse_size(text: str) -> int:
    """Bytes of "1GB", "512 MiB", "2g" (DuckDB's units: KB=1000, KiB=1024)."""
    if not _SIZE.match(text):
        raise ValueError(f"{text!r} is not a size (write e.g. 1GB, 512MiB)")
    number = re.match(r"\s*[\d.]+", text)
    assert number is not None
    unit = text[number.end() :].strip().lower()
    return int(float(number.group()) * _UNITS[unit])


def machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """Half the machine's memory (4 GB when it cannot be read)."""
    total = machine_memory()
    return total // 2 if total else 4 * 1024**3


@dataclass(frozen=True)
class Shares:
    """How one budget is split (see the module docstring)."""

    budget: int
    sink: int  # the shared sink's memory_limit
    pool: int  # what concurrent spilled merges share
    merge_cap: int  # one merge's grant at most
    spill_after: int  # a step's bytes past which it streams to Parquet

    @classmethod
    def of(
        cls, budget: int, *, merge_cap: int | None = None, spill_after: int | None = None
    ) -> Shares:
        duck = budget * 3 // 4
        sink = max(MIN_GRANT, duck // 4)
        pool = max(MIN_GRANT, duck - sink)
        cap = pool if merge_cap is None else max(MIN_GRANT, min(merge_cap, pool))
        return cls(
            budget=budget,
            sink=sink,
            pool=pool,
            merge_cap=cap,
            spill_after=spill_after if spill_after is not None else max(MiB, sink // 4),
        )


@dataclass
class Grant:
    """Bytes granted to one merge; returned with `MemoryPool.release` (idempotent)."""

    nbytes: int
    released: bool = False


@dataclass
class MemoryPool:
    """The merge pool: grants never sum past `total`; a merge waits while less than its
    minimum is free (cancellable: the request's timeout bounds the wait)."""

    total: int
    cap: int
    in_use: int = 0
    waiting: int = 0
    _changed: anyio.Condition | None = None
    _grants: list[Grant] = field(default_factory=list)

    def _condition(self) -> anyio.Condition:
        if self._changed is None:  # created on the loop that uses it
            self._changed = anyio.Condition()
        return self._changed

    @property
    def free(self) -> int:
        return self.total - self.in_use

    async def acquire(self) -> Grant:
        """The larger of what is free and `MIN_GRANT` (capped at `cap`), once that much is."""
        floor = min(MIN_GRANT, self.cap)
        changed = self._condition()
        async with changed:
            self.waiting += 1
            try:
                while self.free < floor:
                    await changed.wait()
            finally:
                self.waiting -= 1
            grant = Grant(min(self.cap, self.free))
            self.in_use += grant.nbytes
            self._grants.append(grant)
            return grant

    async def release(self, grant: Grant) -> None:
        if grant.released:
            return
        grant.released = True
        changed = self._condition()
        with anyio.CancelScope(shield=True):
            async with changed:
                self.in_use -= grant.nbytes
                self._grants.remove(grant)
                changed.notify_all()


def rss_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RssWatch:
    """Peak RSS while some work runs: one sampling thread for the whole process, running only
    while a watcher is open, every `every_s`. RSS is the process's, so a request's figure
    includes whatever ran beside it (requests share one process and one DuckDB)."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._watchers: dict[int, int] = {}  # id -> peak seen
        self._next = 0
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            now = rss_bytes()
            with self._lock:
                if not self._watchers:
                    self._thread = None
                    return
                for key, peak in self._watchers.items():
                    if now > peak:
                        self._watchers[key] = now
            time.sleep(self.every_s)

    @contextmanager
    def watch(self) -> Iterator[Peak]:
        peak = Peak()
        with self._lock:
            key = self._next
            self._next += 1
            self._watchers[key] = rss_bytes()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="rss-watch", daemon=True)
                self._thread.start()
        try:
            yield peak
        finally:
            now = rss_bytes()
            with self._lock:
                peak.nbytes = max(self._watchers.pop(key), now)


@dataclass
class Peak:
    nbytes: int = 0  # set when the watch ends


RSS = RssWatch()
