"""The result store shared by many processes: each result is one Parquet object in an
S3-compatible bucket, indexed in PostgreSQL (engine/results_index.py: owner, expiry, size,
columns, rows per row group).

Objects are read and written with pyarrow's S3 filesystem (already a dependency, the AWS C++
SDK inside the wheel): a page opens the object and reads the footer and only the row groups
that hold it, each a ranged GET (coalesced when adjacent). The footer of a result this process
wrote or read is kept (bounded), so later pages fetch only their row groups; small results
this process wrote are kept in memory too (bounded). The index row is looked up for every
page, so ownership, expiry and eviction hold across processes.

An object is uploaded before its index row is written, and its row is deleted before the
object is: whatever is seen in the index is readable. Objects left without a row (a process
killed between the two steps) are removed by the periodic sweep once they are old enough.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.config import ResultsConfig
from engine.errors import ConfigError, ResultNotFound, ResultStoreUnavailable
from engine.results import (
    ANONYMOUS,
    Page,
    Reader,
    ResultStore,
    StoredResult,
    check_request_id,
    may_read,
    page_of,
    read_rows,
    write_parquet,
)
from engine.results_index import IndexEntry, ResultIndex

log = logging.getLogger("sluice.results")
T = TypeVar("T")

TABLE_CACHE_BYTES = 64 * 1024**2  # small results this process wrote, kept in memory
FOOTER_CACHE_BYTES = 32 * 1024**2  # Parquet footers kept (a large result's is large)
ORPHAN_AGE_S = 600.0  # an object without an index row this old is removed
ORPHAN_SWEEP_S = 300.0
ORPHAN_SWEEP_MAX = 10_000  # objects looked at per sweep
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.[0-9a-f]{12}\.parquet$")  # <id>.<token>


def filesystem(cfg: ResultsConfig, env: dict[str, str] | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for `cfg`, the credentials read from the environment
    variables it names. Raises ConfigError when one is not set."""
    env = dict(os.environ) if env is None else env
    missing = [name for name in (cfg.access_key_env, cfg.secret_key_env) if not env.get(name)]
    if missing:
        raise ConfigError(
            "results",
            [f"results: environment variable {missing[0]} (the S3 credentials) is not set"],
        )
    scheme = None
    endpoint = cfg.endpoint
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    return pafs.S3FileSystem(
        access_key=env[cfg.access_key_env],
        secret_key=env[cfg.secret_key_env],
        region=cfg.region,
        endpoint_override=endpoint,
        scheme=scheme,
        connect_timeout=5,
        request_timeout=30,
    )


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """A failure to reach the bucket or the index is a 503, not an internal error (a
    missing object is the caller's ResultNotFound)."""
    try:
        yield
    except (FileNotFoundError, ResultNotFound):
        raise
    except (OSError, TimeoutError) as exc:  # asyncpg's and pyarrow's network errors
        raise ResultStoreUnavailable(what, exc) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):
            raise ResultStoreUnavailable(what, exc) from exc
        raise


class _Lru(OrderedDict[str, Any]):
    """A bounded map, least recently used first out; `weigh` gives each value's weight."""

    def __init__(self, limit: int, weigh: Callable[[Any], int]) -> None:
        super().__init__()
        self.limit, self.weigh, self.weight = limit, weigh, 0
        self.lock = threading.Lock()

    def take(self, key: str) -> Any:
        with self.lock:
            value = self.get(key)
            if value is not None:
                self.move_to_end(key)
            return value

    def keep(self, key: str, value: Any) -> None:
        weight = self.weigh(value)
        if weight > self.limit:
            return
        with self.lock:
            if key in self:
                self.weight -= self.weigh(self.pop(key))
            self[key] = value
            self.weight += weight
            while self.weight > self.limit:
                _, old = self.popitem(last=False)
                self.weight -= self.weigh(old)


class ObjectResultStore(ResultStore):
    """Results as objects under `bucket/prefix`, indexed by `index`. `open()` it in the event
    loop that serves it: the blocking methods reach the index through that loop."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        bucket: str,
        prefix: str,
        index: ResultIndex,
        *,
        ttl: float = 900.0,
        max_results: int = 1_000,
        max_bytes: int = 2 * 1024**3,
        row_group_rows: int = 10_000,
    ) -> None:
        super().__init__(
            ttl=ttl, max_results=max_results, max_bytes=max_bytes, row_group_rows=row_group_rows
        )
        self.fs = fs
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.index = index
        self._tables = _Lru(TABLE_CACHE_BYTES, lambda t: int(t.nbytes))
        self._footers = _Lru(FOOTER_CACHE_BYTES, lambda m: int(m.serialized_size))
        self._token: Any = None
        self._count = 0
        self._bytes = 0
        self._swept = time.monotonic()

    @classmethod
    def from_config(
        cls, cfg: ResultsConfig, run_store: str | None, **bounds: Any
    ) -> ObjectResultStore:
        index = ResultIndex(cfg.index or run_store or "")
        return cls(filesystem(cfg), cfg.bucket or "", cfg.prefix, index, **bounds)

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        await self.index.open()
        self._token = anyio.lowlevel.current_token()
        try:
            info = await anyio.to_thread.run_sync(self.fs.get_file_info, self.bucket)
        except OSError as exc:
            await self.index.close()
            raise ConfigError("results", [f"results: bucket {self.bucket!r}: {exc}"]) from exc
        if info.type == pafs.FileType.NotFound:
            await self.index.close()
            raise ConfigError(
                "results",
                [f"results.bucket: bucket {self.bucket!r} does not exist; create it first"],
            )
        try:
            self._count, self._bytes = await self.index.totals()
        except BaseException:
            await self.index.close()
            raise

    async def close(self) -> None:
        await self.index.close()

    async def ready(self) -> str:
        try:
            with anyio.fail_after(2):
                await self.index.ping()
                await anyio.to_thread.run_sync(self.fs.get_file_info, self.bucket)
        except Exception as exc:  # any failure means not ready
            return f"error: {type(exc).__name__}: {exc}"
        return "ok"

    def _call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """An index call from a worker thread, through the serving loop."""
        if self._token is None:
            raise RuntimeError("the result store is not open")
        return anyio.from_thread.run(func, *args, token=self._token)

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
        key = f"{self.prefix}{check_request_id(request_id)}.{secrets.token_hex(6)}.parquet"
        path = self._path(key)
        with unavailable("bucket"):
            sink = self.fs.open_output_stream(path)
        try:
            written = write_parquet(
                reader,
                sink,
                head_rows=head_rows,
                row_group_rows=self.row_group_rows,
                max_bytes=self.max_bytes,
                owner=owner,
                stop=stop,
            )
            with unavailable("bucket"):
                sink.close()  # completes the upload
        except BaseException:
            # the stream cannot be abandoned without uploading what it holds: finish it,
            # then remove the object (no index row ever named it)
            self._discard(sink, key)
            raise
        try:
            with unavailable("index"):
                replaced = self._call(
                    functools.partial(
                        self.index.put,
                        request_id=request_id,
                        object_key=key,
                        owner=owner,
                        ttl=self.ttl,
                        total_rows=written.total,
                        nbytes=written.nbytes,
                        columns=written.schema.names,
                        row_groups=written.row_groups,
                    )
                )
        except BaseException:
            self._remove_object(key)
            raise
        self._footers.keep(key, written.metadata)
        if written.table is not None:
            self._tables.keep(key, written.table)
        if replaced is not None:
            self._remove_object(replaced)
        try:
            self.evict_bounds()
        except Exception:  # the result is stored; the periodic eviction retries the bounds
            log.exception("evicting stored results failed")
        return written.stored(request_id)

    def _discard(self, sink: pa.NativeFile, key: str) -> None:
        try:
            sink.close()
        except OSError:
            pass
        self._remove_object(key)

    def _remove_object(self, key: str) -> None:
        try:
            self.fs.delete_file(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:  # the orphan sweep retries it
            log.warning("could not remove result object %s: %s", key, exc)

    # -- reading ---------------------------------------------------------------------------
    async def _entry(self, request_id: str, reader: Reader) -> IndexEntry:
        check_request_id(request_id)
        with unavailable("index"):
            entry = await self.index.get(request_id)
        if entry is None or not may_read(entry.owner, reader):
            raise ResultNotFound(request_id)  # another principal's result does not exist
        return entry

    async def page(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        entry = await self._entry(request_id, reader or ANONYMOUS)
        return await anyio.to_thread.run_sync(self._page, entry, page, size)

    def page_sync(
        self, request_id: str, page: int, size: int, reader: Reader | None = None
    ) -> Page:
        return self._call(self.page, request_id, page, size, reader)

    def _page(self, entry: IndexEntry, page: int, size: int) -> Page:
        def rows_between(start: int, stop: int) -> list[dict[str, Any]]:
            table = self._tables.take(entry.object_key)
            if table is not None:
                rows: list[dict[str, Any]] = table.slice(start, stop - start).to_pylist()
                return rows
            return self._read(entry, start, stop)

        return page_of(entry.columns, entry.total_rows, entry.owner, page, size, rows_between)

    def _read(self, entry: IndexEntry, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows [start, stop) with ranged GETs: the footer (unless kept) and the row groups
        that hold them, adjacent ones in one request."""
        try:
            with unavailable("bucket"):
                source = self.fs.open_input_file(self._path(entry.object_key))
        except FileNotFoundError:
            raise ResultNotFound(entry.request_id) from None
        with source, unavailable("bucket"):
            footer = self._footers.take(entry.object_key)
            file = pq.ParquetFile(source, metadata=footer, pre_buffer=True)
            if footer is None:
                self._footers.keep(entry.object_key, file.metadata)
            return read_rows(file, entry.row_groups, start, stop)

    async def open_file(self, request_id: str, reader: Reader | None = None) -> pa.NativeFile:
        entry = await self._entry(request_id, reader or ANONYMOUS)
        try:
            with unavailable("bucket"):
                return await anyio.to_thread.run_sync(
                    self.fs.open_input_file, self._path(entry.object_key)
                )
        except FileNotFoundError:
            raise ResultNotFound(request_id) from None

    # -- eviction --------------------------------------------------------------------------
    def delete(self, request_id: str) -> None:
        key = self._call(self.index.remove, check_request_id(request_id))
        if key is not None:
            self._remove_object(key)

    def evict_bounds(self) -> list[str]:
        """Forget expired results and the oldest past the bounds, in every process."""
        gone = self._call(self.index.evict, self.max_results, self.max_bytes)
        for _, key in gone:
            self._remove_object(key)
        self._count, self._bytes = self._call(self.index.totals)
        return [rid for rid, _ in gone]

    def evict(self) -> list[str]:
        gone = self.evict_bounds()
        if time.monotonic() - self._swept > ORPHAN_SWEEP_S:
            self._swept = time.monotonic()
            self.sweep_orphans()
        return gone

    def sweep_orphans(self, older_than: float = ORPHAN_AGE_S) -> list[str]:
        """Remove objects this store named (`<request_id>.<token>.parquet`, right under the
        prefix) that no index row names, once `older_than` seconds old (a younger one may be
        an upload whose row is being written). Nothing else under the prefix is touched."""
        selector = pafs.FileSelector(
            f"{self.bucket}/{self.prefix}".rstrip("/"), allow_not_found=True
        )
        cutoff = time.time() - older_than
        found: list[str] = []
        for info in self.fs.get_file_info(selector):
            # only names this store writes: other objects under the prefix are not ours
            if info.type != pafs.FileType.File or not _OBJECT_NAME.match(info.base_name):
                continue
            if info.mtime is not None and info.mtime.timestamp() > cutoff:
                continue
            found.append(info.path.removeprefix(f"{self.bucket}/"))
            if len(found) >= ORPHAN_SWEEP_MAX:
                break
        known = self._call(self.index.known, found) if found else set()
        orphans = [key for key in found if key not in known]
        for key in orphans:
            self._remove_object(key)
        return orphans

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes
