"""Stored federated results, paged by `GET /v1/results/{request_id}`.

`ResultStore` is what the engine and the API use: `store_reader`/`store_table` write a
result (blocking, from a worker thread), `page` reads a slice of it, `open_file` the whole
Parquet file. Two stores implement it: `DiskResultStore` (here, the embedded default) and the
object-storage store shared by many processes (engine/object_results.py).

Every result is one Parquet file written by pyarrow from the merge's Arrow stream (the sink's
DuckDB has file access disabled), in row groups of `row_group_rows`, in the merge's order, so a
page is a stable slice read from only the row groups that hold it. Entries expire after `ttl`
seconds; past `max_results` or `max_bytes` the oldest go first.

Every result belongs to the principal whose request made it: a lookup by anyone else is a
ResultNotFound, as for an id that never existed, unless the reader holds the admin grant (the
caller audits that).

The disk store writes under `<data_dir>/results/`, renamed into place atomically, the owner
kept in the file's metadata, so every worker process on the host can page it; small results
are also kept in memory.
"""

from __future__ import annotations

import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
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


def check_request_id(request_id: str) -> str:
    """A result id as it may name a file or an object; anything else was never stored."""
    if not _REQUEST_ID.match(request_id):
        raise ResultNotFound(request_id)
    return request_id


def may_read(owner: str | None, reader: Reader) -> bool:
    return owner == reader.principal or reader.admin


@dataclass(slots=True)
class Written:
    """A result written as Parquet: what `write_parquet` saw while writing it."""

    schema: pa.Schema
    head: list[dict[str, Any]]
    total: int
    nbytes: int
    row_groups: list[int]  # rows per row group, in order
    metadata: pq.FileMetaData
    table: pa.Table | None  # the whole result when it is at most MEMORY_BYTES

    def stored(self, request_id: str) -> StoredResult:
        return StoredResult(
            request_id=request_id,
            columns=self.schema.names,
            types=[str(f.type) for f in self.schema],
            head=self.head,
            total=self.total,
            nbytes=self.nbytes,
        )


def write_parquet(
    reader: pa.RecordBatchReader,
    sink: pa.NativeFile,
    *,
    head_rows: int,
    row_group_rows: int,
    max_bytes: int,
    owner: str | None,
    stop: threading.Event | None,
) -> Written:
    """Every batch of `reader` into `sink` as Parquet (blocking), the sink left open.

    The file may not grow past `max_bytes` (the whole store's bound: a larger result could
    never be kept): writing stops there with ResultTooLarge, checked after each batch, so at
    most one batch's row groups pass the bound. A set `stop` event ends the write at the next
    batch with Interrupted (the request was cancelled)."""
    names = unique_columns(reader.schema.names)
    schema = pa.schema([f.with_name(n) for f, n in zip(reader.schema, names, strict=True)])
    if owner is not None:
        schema = schema.with_metadata({OWNER_KEY: owner.encode()})
    head: list[dict[str, Any]] = []
    kept: list[pa.RecordBatch] = []
    kept_bytes = 0
    total = 0
    start = sink.tell()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for raw in reader:
            batch = pa.RecordBatch.from_arrays(raw.columns, schema=schema)
            if batch.num_rows == 0:
                continue
            if stop is not None and stop.is_set():
                raise Interrupted
            writer.write_batch(batch, row_group_size=row_group_rows)
            if sink.tell() - start > max_bytes:
                raise ResultTooLarge(max_bytes, "server.max_result_bytes")
            if len(head) < head_rows:
                head.extend(batch.slice(0, head_rows - len(head)).to_pylist())
            total += batch.num_rows
            if kept_bytes <= MEMORY_BYTES:
                kept.append(batch)
                kept_bytes += batch.nbytes
    finally:
        writer.close()
    meta = writer.writer.metadata
    return Written(
        schema=schema,
        head=head,
        total=total,
        nbytes=sink.tell() - start,
        row_groups=[meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
        metadata=meta,
        table=pa.Table.from_batches(kept, schema=schema) if kept_bytes <= MEMORY_BYTES else None,
    )


def row_groups_for(row_groups: Sequence[int], start: int, stop: int) -> tuple[list[int], int]:
    """The row groups that hold rows [start, stop), and the first row of the first one."""
    groups: list[int] = []
    offset = first = 0
    for i, n in enumerate(row_groups):
        if offset + n > start and offset < stop:
            if not groups:
                first = offset
            groups.append(i)
        offset += n
    return groups, first


def read_rows(
    file: pq.ParquetFile, row_groups: Sequence[int], start: int, stop: int
) -> list[dict[str, Any]]:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    groups, first = row_groups_for(row_groups, start, stop)
    table = file.read_row_groups(groups)
    rows: list[dict[str, Any]] = table.slice(start - first, stop - start).to_pylist()
    return rows


def page_of(
    columns: list[str],
    total: int,
    owner: str | None,
    page: int,
    size: int,
    rows_between: Any,
) -> Page:
    """Page `page` of `size` rows (1-indexed), `rows_between(start, stop)` giving the rows."""
    if page < 1 or size < 1:
        raise ValueError("page and size start at 1")
    start = (page - 1) * size
    stop = min(start + size, total)
    if start >= total:
        return Page(columns=columns, rows=[], total=total, has_more=False, owner=owner)
    rows: list[dict[str, Any]] = rows_between(start, stop)
    return Page(columns=columns, rows=rows, total=total, has_more=stop < total, owner=owner)


class ResultStore(ABC):
    """Results keyed by request_id, bounded by count, bytes and age (oldest evicted first).

    Writing and `page_sync`/`delete`/`evict` block: call them in a worker thread."""

    def __init__(
        self,
        *,
        ttl: float = 900.0,
        max_results: int = 1_000,
        max_bytes: int = 2 * 1024**3,
        row_group_rows: int = 10_000,
    ) -> None:
        self.ttl = ttl
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.row_group_rows = row_group_rows

    async def open(self) -> None:  # noqa: B027 (most stores hold nothing to open)
        """Connect what the store needs (the runtime calls it before serving)."""

    async def close(self) -> None:  # noqa: B027
        """Release what `open` took."""

    @abstractmethod
    async def ready(self) -> str:
        """ "ok", or what is wrong (for /readyz)."""

    # -- writing ---------------------------------------------------------------------------
    @abstractmethod
    def store_reader(
        self,
        request_id: str,
        reader: pa.RecordBatchReader,
        *,
        head_rows: int,
        owner: str | None = None,
        stop: threading.Event | None = None,
    ) -> StoredResult:
        """Write every batch of `reader` under `request_id` (blocking: call it in a worker
        thread). Raises ResultTooLarge past `max_bytes`, Interrupted when `stop` is set."""

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
    @abstractmethod
    def page_sync(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        """Rows `(page-1)*size ...` of a stored result (1-indexed pages), blocking."""

    async def page(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        return await anyio.to_thread.run_sync(self.page_sync, request_id, page, size, reader)

    @abstractmethod
    async def open_file(self, request_id: str, reader: Reader | None = None) -> pa.NativeFile:
        """The stored result's Parquet file, opened for reading (whole-result downloads; the
        caller closes it). Raises ResultNotFound."""

    # -- eviction --------------------------------------------------------------------------
    @abstractmethod
    def delete(self, request_id: str) -> None: ...

    @abstractmethod
    def evict(self) -> list[str]:
        """Drop expired entries, then the oldest while over the count or byte bound."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def nbytes(self) -> int: ...


@dataclass(slots=True)
class _Entry:
    path: Path
    created: float
    total: int
    nbytes: int
    columns: list[str]
    owner: str | None = None
    table: pa.Table | None = None
    row_groups: list[int] = field(default_factory=list)


class DiskResultStore(ResultStore):
    """Parquet files in one folder of this host (the embedded default)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        ttl: float = 900.0,
        max_results: int = 1_000,
        max_bytes: int = 2 * 1024**3,
        row_group_rows: int = 10_000,
    ) -> None:
        super().__init__(
            ttl=ttl, max_results=max_results, max_bytes=max_bytes, row_group_rows=row_group_rows
        )
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, _Entry] = {}  # insertion order = age
        self._lock = threading.Lock()

    def _path(self, request_id: str) -> Path:
        return self.dir / f"{check_request_id(request_id)}.parquet"

    async def ready(self) -> str:
        return "ok" if os.access(self.dir, os.W_OK) else f"not writable: {self.dir}"

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
        path = self._path(request_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with pa.OSFile(str(tmp), "wb") as sink:
                written = write_parquet(
                    reader,
                    sink,
                    head_rows=head_rows,
                    row_group_rows=self.row_group_rows,
                    max_bytes=self.max_bytes,
                    owner=owner,
                    stop=stop,
                )
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        entry = _Entry(
            path=path,
            created=time.time(),
            total=written.total,
            nbytes=written.nbytes,
            columns=written.schema.names,
            owner=owner,
            table=written.table,
            row_groups=written.row_groups,
        )
        with self._lock:
            self._entries.pop(request_id, None)
            self._entries[request_id] = entry
        self.evict()
        return written.stored(request_id)

    # -- reading ---------------------------------------------------------------------------
    def _entry(self, request_id: str, reader: Reader) -> _Entry:
        entry = self._any_entry(request_id)
        if not may_read(entry.owner, reader):
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
                row_groups=[meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
            )
        if now - entry.created > self.ttl:
            self.delete(request_id)
            raise ResultNotFound(request_id)
        return entry

    def page_sync(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        entry = self._entry(request_id, reader or ANONYMOUS)

        def rows_between(start: int, stop: int) -> list[dict[str, Any]]:
            if entry.table is not None:
                rows: list[dict[str, Any]] = entry.table.slice(start, stop - start).to_pylist()
                return rows
            try:
                file = pq.ParquetFile(entry.path)
            except OSError:
                raise ResultNotFound(request_id) from None
            with file:
                return read_rows(file, entry.row_groups, start, stop)

        return page_of(entry.columns, entry.total, entry.owner, page, size, rows_between)

    def file(self, request_id: str, reader: Reader | None = None) -> Path:
        """The stored result's Parquet file. Raises ResultNotFound."""
        self._entry(request_id, reader or ANONYMOUS)
        return self._path(request_id)

    async def open_file(self, request_id: str, reader: Reader | None = None) -> pa.NativeFile:
        def go() -> pa.NativeFile:
            try:
                return pa.OSFile(str(self.file(request_id, reader)), "rb")
            except FileNotFoundError:
                raise ResultNotFound(request_id) from None

        return await anyio.to_thread.run_sync(go)

    # -- eviction --------------------------------------------------------------------------
    def delete(self, request_id: str) -> None:
        with self._lock:
            entry = self._entries.pop(request_id, None)
        path = entry.path if entry else self._path(request_id)
        path.unlink(missing_ok=True)

    def evict(self) -> list[str]:
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
