"""Large steps streamed to Parquet files, and the DuckDB of their own their merge runs in.

Measured (issue 19): Arrow ingest overshoots DuckDB's `memory_limit` (2.3x at 1 GB, the limit
covers the buffer manager only), while steps written to Parquet and merged over
`read_parquet` views peaked lowest (1.15 GB at a 1 GB limit). So once a step's batches pass
`limits.spill_after_bytes`, the request's writer moves the rows it already appended to a
Parquet file and writes every later batch there as a row group; the merge then runs in a
DuckDB opened for the request, with a `memory_limit` granted from the merge pool
(engine.memory), reading the spilled steps through views and the request's other (small)
step tables copied in.

Disk: every request's files live in `<spill root>/<request schema>/` and count against one
process-wide bound (`DiskBudget`): each row group reserves its Arrow size before it is
written, then the reservation is trued up to the bytes on disk; passing the bound stops the
request with 507 `spill_limit_exceeded` naming the setting. The folder is removed when the
request ends, whatever way it ends.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import SpillLimitExceeded

SETTING = "limits.merge_temp_limit"


class DiskBudget:
    """Bytes of spill files in the process, never past `limit` (thread-safe: writers run in
    worker threads)."""

    def __init__(self, limit: int, setting: str = SETTING, configured: int | None = None) -> None:
        self.limit = limit
        self.setting = setting
        self.configured = configured or limit  # the setting's value, for messages
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int, what: str) -> None:
        with self._lock:
            if self.used + nbytes > self.limit:
                raise SpillLimitExceeded(self.configured, what, self.setting)
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used = max(0, self.used - nbytes)

    @property
    def free(self) -> int:
        with self._lock:
            return max(0, self.limit - self.used)


@dataclass
class StepFiles:
    """One spilled step: its Parquet files (a new one whenever its columns change, e.g. a
    document store's later batch brings a field) and the bytes they hold."""

    step_id: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    bytes_on_disk: int = 0
    _writer: pq.ParquetWriter | None = None
    _sink: pa.NativeFile | None = None

    _names: set[str] = field(default_factory=set)  # columns (lowercase) in some file

    def columns(self) -> set[str]:
        return set(self._names)

    def write(self, table: pa.Table, disk: DiskBudget) -> None:
        """Append `table` as a row group (a new file when its schema differs)."""
        if self._writer is None or not table.schema.equals(self._writer.schema):
            self.close(disk)
            path = self.folder / f"{self.step_id}.{len(self.files)}.parquet"
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(
                self._sink, table.schema, compression="snappy", use_dictionary=False
            )
            self.files.append(path)
        assert self._writer is not None and self._sink is not None
        self._names.update(n.lower() for n in table.schema.names)
        estimate = table.nbytes
        disk.reserve(estimate, f"step {self.step_id!r}")
        before = self._sink.tell()
        try:
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        finally:
            written = self._sink.tell() - before
            disk.release(estimate)
        disk.reserve(written, f"step {self.step_id!r}")
        self.bytes_on_disk += written
        self.rows += table.num_rows

    def close(self, disk: DiskBudget | None = None) -> None:
        """Finish the open file (its footer is counted too)."""
        if self._writer is None or self._sink is None:
            return
        before = self._sink.tell()
        try:
            self._writer.close()
            footer = self._sink.tell() - before
        finally:
            self._sink.close()
            self._writer = self._sink = None
        if disk is not None:
            disk.reserve(footer, f"step {self.step_id!r}")
        self.bytes_on_disk += footer


class RequestSpill:
    """One request's spill folder: its spilled steps and the temp files of its merge."""

    def __init__(self, folder: Path, disk: DiskBudget) -> None:
        self.folder = folder
        self.disk = disk
        self.steps: dict[str, StepFiles] = {}
        self._temp_grant = 0
        self._removed = False

    def step(self, step_id: str) -> StepFiles:
        if step_id not in self.steps:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.steps[step_id] = StepFiles(step_id, self.folder)
        return self.steps[step_id]

    def finish(self) -> None:
        for step in self.steps.values():
            step.close(self.disk)

    @property
    def bytes_on_disk(self) -> int:
        return sum(s.bytes_on_disk for s in self.steps.values())

    def temp_directory(self) -> tuple[Path, int]:
        """The merge's DuckDB temp folder and its size bound: half of the spill space free
        now (the rest stays for the other requests), reserved until `remove`."""
        self._temp_grant = self.disk.free // 2
        self.disk.reserve(self._temp_grant, "the merge")
        return self.folder / "tmp", self._temp_grant

    def remove(self) -> None:
        """Close every writer, delete the folder and give its bytes back (idempotent)."""
        if self._removed:
            return
        self._removed = True
        for step in self.steps.values():
            try:
                step.close()
            finally:
                self.disk.release(step.bytes_on_disk)
        self.disk.release(self._temp_grant)
        shutil.rmtree(self.folder, ignore_errors=True)


class SpillArea:
    """The process's spill folder (`<data_dir>/spill/<pid>`), its disk bound and the size
    past which a step spills. Processes may share a data_dir, so each has its own folder;
    the folders of processes that no longer run are removed at start."""

    def __init__(
        self, root: Path, limit: int, spill_after: int, configured: int | None = None
    ) -> None:
        self.root = root / str(os.getpid())
        self.disk = DiskBudget(limit, configured=configured)
        self.spill_after = spill_after
        _remove_dead(root)
        shutil.rmtree(self.root, ignore_errors=True)  # a dead process with our pid
        self.root.mkdir(parents=True, exist_ok=True)

    def request(self, name: str) -> RequestSpill:
        return RequestSpill(self.root / name, self.disk)

    def leftovers(self) -> list[Path]:
        """Request folders present now (tests check every request removes its own)."""
        return sorted(self.root.iterdir()) if self.root.exists() else []


def _remove_dead(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.name.isdigit() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


def open_merge_db(
    spill: RequestSpill, memory_limit: int, threads: int
) -> duckdb.DuckDBPyConnection:
    """A DuckDB for one request's merge: its memory_limit granted from the pool, its temp
    files bounded inside the request's folder, file access only to that folder (the merge
    SQL was already checked to read step tables only), configuration locked."""
    temp, temp_limit = spill.temp_directory()
    conn = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": threads,
            "memory_limit": f"{max(1, memory_limit // 1024**2)}MB",
            "temp_directory": str(temp),
            "max_temp_directory_size": f"{max(1, temp_limit // 1024**2)}MB",
        },
    )
    try:
        # allowed_directories can only be set once the database is started
        folder = str(spill.folder).replace("'", "''")
        conn.execute(f"SET allowed_directories = ['{folder}/']")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
    except BaseException:
        conn.close()
        raise
    return conn


def parquet_list(files: Iterator[Path] | list[Path]) -> str:
    """A DuckDB list literal of file paths (ours: quotes escaped all the same)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"
