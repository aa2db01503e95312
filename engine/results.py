"""Stored federated results, paged by `GET /v1/results/{request_id}`.

Every result is written as one Parquet file under `<data_dir>/results/` (pyarrow, from the
merge's Arrow stream; the sink's DuckDB has file access disabled), named by request_id and
renamed into place atomically, so any worker process can page it. Small results are also
kept in memory. Rows are stored in the merge's order, so a page is a stable slice of it.
Entries expire after `ttl` seconds; past `max_results` or `max_bytes` the oldest go first.

Every result belongs to the principal whose request made it (kept in the file's metadata, so
every worker knows it): a lookup by anyone else is a ResultNotFound, as for an id that never
existed, unless the reader holds the admin grant (the caller audits that).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import ResultNotFound, ResultTooLarge

OWNER_KEY = b"sluice.owner"  # Parquet schema metadata: the principal the result belongs to
MEMORY_BYTES = 8 * 1024**2  # results up to this size are also cached in memory
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class Interrupted(Exception):
    """Internal: a write stopped because its request was cancelled."""


@dataclass(slots=True)
class StoredResult:
    """What storing a result returns: its columns, its first rows and its size."""

    request_id: str
    columns: list[str]
    types: list[str]
    head: list[dict[str, Any]]
    total: int
    nbytes: int


@dataclass(slots=True)
class Page:
    columns: list[str]
    rows: list[dict[str, Any]]
    total: int
    has_more: bool
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Reader:
    """Who looks a result up: its principal (None without auth) and the admin grant. Left
    out, a lookup is anonymous: it finds only results stored without an owner."""

    principal: str | None
    admin: bool = False


ANONYMOUS = Reader(None)


@dataclass(slots=True)
class _Entry:
    path: Path
    created: float
    total: int
    nbytes: int
    columns: list[str]
    owner: str | None = None
    table: pa.Table | None = None
    row_group_starts: list[int] = field(default_factory=list)


def unique_columns(names: list[str]) -> list[str]:
    """A merge may produce duplicate names (SELECT * over a join); rows are dicts."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


class ResultStore:
    """Results keyed by request_id, bounded by count, bytes and age (oldest evicted first)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        ttl: float = 900.0,
        max_results: int = 1_000,
        max_bytes: int = 2 * 1024**3,
        row_group_rows: int = 10_000,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.row_group_rows = row_group_rows
        self._entries: dict[str, _Entry] = {}  # insertion order = age
        self._lock = threading.Lock()

    def _path(self, request_id: str) -> Path:
        if not _REQUEST_ID.match(request_id):
            raise ResultNotFound(request_id)
        return self.dir / f"{request_id}.parquet"

    # -- writing ---------------------------------------------------------------------------

    def store_reader(
        self,
        request_id: str,
        reader: pa.RecordBatchReader,
        *,
        head_rows: int,
        owner: str | None = None,
        stop: threading.Event | None = None,
    ) -> StoredResult:
        """Write every batch of `reader` (blocking: call it in a worker thread).

        The file may not grow past `max_bytes` (the whole store's bound: a larger result
        could never be kept): writing stops there with ResultTooLarge, checked after each
        batch, so at most one batch's row groups pass the bound before the file is removed.
        A set `stop` event ends the write at the next batch (the request was cancelled)."""
        path = self._path(request_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        names = unique_columns(reader.schema.names)
        schema = pa.schema([f.with_name(n) for f, n in zip(reader.schema, names, strict=True)])
        if owner is not None:
            schema = schema.with_metadata({OWNER_KEY: owner.encode()})
        head: list[dict[str, Any]] = []
        kept: list[pa.RecordBatch] = []
        kept_bytes = 0
        total = 0
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for raw in reader:
                    batch = pa.RecordBatch.from_arrays(raw.columns, schema=schema)
                    if batch.num_rows == 0:
                        continue
                    if stop is not None and stop.is_set():
                        raise Interrupted
                    writer.write_batch(batch, row_group_size=self.row_group_rows)
                    if tmp.stat().st_size > self.max_bytes:
                        raise ResultTooLarge(self.max_bytes, "server.max_result_bytes")
                    if len(head) < head_rows:
                        head.extend(batch.slice(0, head_rows - len(head)).to_pylist())
                    total += batch.num_rows
                    if kept_bytes <= MEMORY_BYTES:
                        kept.append(batch)
                        kept_bytes += batch.nbytes
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        nbytes = path.stat().st_size
        table = pa.Table.from_batches(kept, schema=schema) if kept_bytes <= MEMORY_BYTES else None
        entry = _Entry(
            path=path,
            created=time.time(),
            total=total,
            nbytes=nbytes,
            columns=names,
            owner=owner,
            table=table,
        )
        with self._lock:
            self._entries.pop(request_id, None)
            self._entries[request_id] = entry
        self.evict()
        return StoredResult(
            request_id=request_id,
            columns=names,
            types=[str(f.type) for f in schema],
            head=head,
            total=total,
            nbytes=nbytes,
        )

    def store_table(
        self, request_id: str, table: pa.Table, *, head_rows: int, owner: str | None = None
    ) -> StoredResult:
        return self.store_reader(
            request_id,
            pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
            head_rows=head_rows,
            owner=owner,
        )

    # -- reading ---------------------------------------------------------------------------

    def _entry(self, request_id: str, reader: Reader) -> _Entry:
        entry = self._any_entry(request_id)
        if entry.owner != reader.principal and not reader.admin:
            raise ResultNotFound(request_id)  # another principal's result does not exist
        return entry

    def _any_entry(self, request_id: str) -> _Entry:
        path = self._path(request_id)
        with self._lock:
            entry = self._entries.get(request_id)
        now = time.time()
        if entry is None:
            # written by another worker process: its file is the record
            try:
                created = path.stat().st_mtime
                meta = pq.read_metadata(path)
            except OSError:
                raise ResultNotFound(request_id) from None
            arrow_schema = meta.schema.to_arrow_schema()
            owner = (arrow_schema.metadata or {}).get(OWNER_KEY)
            entry = _Entry(
                path=path,
                created=created,
                total=meta.num_rows,
                nbytes=path.stat().st_size,
                columns=arrow_schema.names,
                owner=None if owner is None else owner.decode(),
            )
        if now - entry.created > self.ttl:
            self.delete(request_id)
            raise ResultNotFound(request_id)
        return entry

    def page_sync(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        """Rows `(page-1)*size ...` of a stored result (1-indexed pages), blocking."""
        if page < 1 or size < 1:
            raise ValueError("page and size start at 1")
        entry = self._entry(request_id, reader or ANONYMOUS)
        start = (page - 1) * size
        stop = min(start + size, entry.total)
        if start >= entry.total:
            return Page(
                columns=entry.columns, rows=[], total=entry.total, has_more=False, owner=entry.owner
            )
        if entry.table is not None:
            rows = entry.table.slice(start, stop - start).to_pylist()
        else:
            rows = self._read_range(entry, start, stop)
        return Page(
            columns=entry.columns,
            rows=rows,
            total=entry.total,
            has_more=stop < entry.total,
            owner=entry.owner,
        )

    async def page(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        return await anyio.to_thread.run_sync(self.page_sync, request_id, page, size, reader)

    def _read_range(self, entry: _Entry, start: int, stop: int) -> list[dict[str, Any]]:
        """Read only the row groups that hold rows [start, stop)."""
        try:
            file = pq.ParquetFile(entry.path)
        except OSError:
            raise ResultNotFound(entry.path.stem) from None
        with file:
            groups: list[int] = []
            offset = 0
            first_offset = 0
            for i in range(file.num_row_groups):
                n = file.metadata.row_group(i).num_rows
                if offset + n > start and offset < stop:
                    if not groups:
                        first_offset = offset
                    groups.append(i)
                offset += n
            table = file.read_row_groups(groups)
        rows: list[dict[str, Any]] = table.slice(start - first_offset, stop - start).to_pylist()
        return rows

    def file(self, request_id: str, reader: Reader | None = None) -> Path:
        """The stored result's Parquet file (whole-result downloads). Raises ResultNotFound."""
        self._entry(request_id, reader or ANONYMOUS)
        return self._path(request_id)

    def info(self, request_id: str, reader: Reader | None = None) -> tuple[list[str], int]:
        entry = self._entry(request_id, reader or ANONYMOUS)
        return entry.columns, entry.total

    # -- eviction --------------------------------------------------------------------------

    def delete(self, request_id: str) -> None:
        with self._lock:
            entry = self._entries.pop(request_id, None)
        path = entry.path if entry else self._path(request_id)
        path.unlink(missing_ok=True)

    def evict(self) -> list[str]:
        """Drop expired entries, then the oldest while over the count or byte bound."""
        now = time.time()
        gone: list[str] = []
        with self._lock:
            for rid, entry in list(self._entries.items()):
                if now - entry.created > self.ttl:
                    gone.append(rid)
                    del self._entries[rid]
            total_bytes = sum(e.nbytes for e in self._entries.values())
            while self._entries and (
                len(self._entries) > self.max_results or total_bytes > self.max_bytes
            ):
                rid, entry = next(iter(self._entries.items()))
                del self._entries[rid]
                total_bytes -= entry.nbytes
                gone.append(rid)
        for rid in gone:
            self._path(rid).unlink(missing_ok=True)
        return gone

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())
