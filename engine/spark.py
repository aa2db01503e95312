"""Big merges handed to Spark: the step tables staged as Parquet, the merge run by a Spark
Connect server, its result streamed back into the result store (paged like any other).

    merger = SparkMerger(settings)            # engine.spark in sluice.yaml
    stored = await merger.merge_and_store(tables, tree, store, request_id, ...)

sluice holds no JVM: the thin Spark Connect client (`pyspark-client`, the `spark` extra)
talks gRPC to the server. Measured here, pushing Arrow over Connect is slow (10M rows: 23 s)
while Spark reading Parquet is fast (8 s cold, 5 s warm), so each step table is written to a
staging folder of its own per request (removed after, whatever happens) and read by Spark.

Order of work, cheapest refusal first: the merge is checked for constructs Spark would
answer differently (engine/spark_sql.py, with the step tables' types), then Spark analyses
it over empty views of the same schemas (an error is a 400 before anything is staged), then
the tables are staged, the merge runs, and its Arrow batches are written to the store as
they arrive (the client's streaming iterator: never the whole result in memory). Result
columns take the names DuckDB would give them, so an answer does not change with the engine.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from connectors.arrow_rows import ARROW_TYPES, arrow_type
from connectors.errors import SluiceError
from engine import spark_sql
from engine.errors import (
    InvalidRequest,
    MergeFailed,
    MergeNotPortable,
    SparkMergeFailed,
    SparkUnavailable,
)
from engine.merge import qualify
from engine.offload import interruptible
from engine.results import Interrupted, ResultStore, StoredResult
from engine.sink import RequestTables, quote
from engine.spark_settings import SparkSettings

STAGE_BATCH_ROWS = 131_072
WATCH_S = 0.5  # a cancelled job's tag is interrupted this often until its thread ends
# DuckDB types Spark's Parquet reader has no match for travel as text (or a wide decimal)
_STAGED_AS = {
    "UUID": "VARCHAR",
    "JSON": "VARCHAR",
    "HUGEINT": "DECIMAL(38,0)",
    "UHUGEINT": "DECIMAL(38,0)",
    "TIME": "VARCHAR",
    "TIMETZ": "VARCHAR",
    "INTERVAL": "VARCHAR",
    "BIT": "VARCHAR",
}


def spark_client() -> Any:
    """The Spark Connect session builder, or a clear error when the client is missing."""
    try:
        with warnings.catch_warnings():
            # pyspark warns at import about the pandas version; sluice does not use pandas
            warnings.simplefilter("ignore", FutureWarning)
            from pyspark.sql import SparkSession
            from pyspark.sql.connect import session as _connect  # noqa: F401
        # pyspark logs each server error with its whole JVM stack trace; sluice answers the
        # request with the error's first line instead
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            logging.getLogger(name).disabled = True
    except ImportError as exc:
        raise SparkUnavailable(
            "engine.spark is configured but the Spark Connect client is not installed: "
            "pip install 'sluice[spark]'"
        ) from exc
    return SparkSession


class SparkMerger:
    """One process's hand-off to Spark: a lazily opened Connect session shared by every
    request (each request's views have names of their own), at most
    `max_concurrent_merges` merges at a time."""

    def __init__(self, settings: SparkSettings) -> None:
        self.settings = settings
        self.limiter = anyio.CapacityLimiter(settings.max_concurrent_merges)
        self._session: Any = None
        self._lock = threading.Lock()

    def wants(self, requested: str | None, rows: int) -> bool:
        """Whether a merge over `rows` step rows goes to Spark: asked for, or past min_rows
        when the request did not choose."""
        if requested is not None:
            return requested == spark_sql.TARGET
        return self.settings.min_rows is not None and rows >= self.settings.min_rows

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                builder = spark_client().builder.remote(self.settings.remote)
                try:
                    # the client retries an absent server for minutes: ask the socket first
                    _probe(self.settings.remote, self.settings.connect_timeout_seconds)
                    self._session = builder.create()  # this merger's own, not the default
                    # DuckDB's naive timestamps are UTC wall clock; Spark's must be too
                    self._session.conf.set("spark.sql.session.timeZone", "UTC")
                except Exception as exc:
                    self._session = None
                    raise SparkUnavailable(
                        f"the Spark Connect server {self.settings.remote} cannot be "
                        f"reached: {_first_line(exc)}",
                        suggestion="check engine.spark.remote and that the server is up",
                    ) from exc
            return self._session

    def forget(self) -> None:
        """Drop the session after the server failed (it may have restarted: its sessions
        are gone); the next merge connects again."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.client.close()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.stop()

    async def merge_and_store(
        self,
        tables: RequestTables,
        tree: exp.Expression | None,
        step_ids: list[str],
        store: ResultStore,
        request_id: str,
        *,
        inline_rows: int,
        owner: str | None,
    ) -> StoredResult:
        """Run the merge `tree` (the checked DuckDB AST; None: the lone step's table) on
        Spark and store its result under `request_id`.

        Raises:
            MergeNotPortable: Spark would answer differently, or its analysis refused it.
            SparkUnavailable: the server cannot be reached or failed for its own reasons.
            Interrupted: the request was cancelled (the Spark job is interrupted too).
        """
        job = _Job(self, tables, tree, step_ids, request_id)
        async with self.limiter:
            return await interruptible(
                lambda: job.run(store, inline_rows=inline_rows, owner=owner), job.interrupt
            )


class _Job:
    """One request's merge on Spark (runs in one worker thread; `interrupt` from another)."""

    def __init__(
        self,
        merger: SparkMerger,
        tables: RequestTables,
        tree: exp.Expression | None,
        step_ids: list[str],
        request_id: str,
    ) -> None:
        self.merger = merger
        self.tables = tables
        self.step_ids = step_ids
        self.request_id = request_id
        self.tree = tree if tree is not None else _select_all(step_ids)
        self.tag = f"sluice-{secrets.token_hex(6)}"
        # only the step tables the merge reads are staged (a CTE's name is not a step)
        read = {t.name.lower() for t in self.tree.find_all(exp.Table)}
        self.views = {
            sid: f"sluice_{self.tag[7:]}_{sid}" for sid in step_ids if sid.lower() in read
        }
        self.folder = merger.settings.staging_dir / f"{request_id}-{self.tag[7:]}"
        self.stop = threading.Event()
        self.session: Any = None

    def interrupt(self) -> None:
        """Called on the event loop when the request is cancelled (the watchdog stops the
        Spark job; the loop never waits on the network)."""
        self.stop.set()

    def _watch(self, done: threading.Event) -> None:
        """Until the job's thread is done: once `stop` is set, interrupt its tag again every
        WATCH_S, so a job submitted just after a first interrupt is stopped too (an
        interrupt only reaches operations the server already has)."""
        self.stop.wait()
        while not done.is_set():
            self._stop_job()
            done.wait(WATCH_S)

    def _stop_job(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.session.interruptTag(self.tag)

    def run(self, store: ResultStore, *, inline_rows: int, owner: str | None) -> StoredResult:
        spark_sql.check(self.tree, self._types())
        names, types = self._duckdb_columns()
        text = spark_sql.to_spark(self.tree, self.views)
        self.session = self.merger.session()
        self.session.addTag(self.tag)
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(done,), name="sluice-spark-watch", daemon=True
        )
        watchdog.start()
        try:
            self._analyse(text)
            self._stage()
            self._views_over_staging()
            if self.stop.is_set():
                raise Interrupted
            frame = self.session.sql(text)
            reader = _as_duckdb(self._batches(frame), names, types)
            return store.store_reader(
                self.request_id, reader, head_rows=inline_rows, owner=owner, stop=self.stop
            )
        except (Interrupted, SluiceError):
            # refused, too large (the store's bound), or cancelled: a job still streaming
            # its result is stopped, not left to run
            self._stop_job()
            raise
        except Exception as exc:
            self._stop_job()
            if self.stop.is_set():
                raise Interrupted from exc
            error = _spark_error(exc)
            if isinstance(error, SparkUnavailable):
                self.merger.forget()  # the next request opens a new session
            raise error from exc
        finally:
            done.set()
            self.stop.set()  # releases the watchdog, which sees `done` and returns
            self._clean()

    # -- the step tables -----------------------------------------------------------------

    def _types(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for sid in self.step_ids:
            state = self.tables.tables.get(sid)
            if state is not None:
                out[sid] = {state.names[k]: t for k, t in state.columns.items()}
        return out

    def _select(self, sid: str) -> str:
        """The step table as staged: types Spark cannot read cast to ones it can."""
        state = self.tables.tables.get(sid)
        if state is None:
            raise InvalidRequest(f"step {sid!r} produced no table (no columns) to merge")
        cols = []
        for key, typ in state.columns.items():
            name = quote(state.names[key])
            staged = _STAGED_AS.get(typ.upper().split("(")[0])
            cols.append(f"CAST({name} AS {staged}) AS {name}" if staged else name)
        return f"SELECT {', '.join(cols)} FROM {self.tables.table_name(sid)}"

    def _duckdb_columns(self) -> tuple[list[str], list[str]]:
        """The result's column names and types as DuckDB gives them (binding only, nothing
        runs)."""
        sql = qualify(self.tree, self.tables.schema, self.step_ids)
        try:
            relation = self.tables.merge_cursor.sql(sql)
            return list(relation.columns), [str(t) for t in relation.types]
        except duckdb.Error as exc:
            raise MergeFailed(str(exc).replace(f"{self.tables.schema}.", "")) from exc

    def _analyse(self, text: str) -> None:
        """Spark's analysis of the merge over empty views of the step tables' schemas."""
        from pyspark.sql.pandas.types import from_arrow_schema

        for sid, view in self.views.items():
            empty = self.tables.merge_cursor.sql(self._select(sid)).limit(0).to_arrow_table()
            schema = from_arrow_schema(empty.schema, prefer_timestamp_ntz=True)
            self.session.createDataFrame([], schema=schema).createOrReplaceTempView(view)
        try:
            self.session.sql(text).schema  # noqa: B018 - analysis only, nothing runs
        except Exception as exc:
            if _is_analysis_error(exc):
                raise MergeNotPortable(
                    "a construct Spark's analysis refused",
                    _first_line(exc),
                    'rewrite the merge in plain SQL, or run it on DuckDB ("engine": "duckdb")',
                    silent=False,
                ) from exc
            raise

    def _stage(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=False)
        for sid in self.views:
            reader = self.tables.merge_cursor.sql(self._select(sid)).to_arrow_reader(
                STAGE_BATCH_ROWS
            )
            try:
                with pq.ParquetWriter(self.folder / f"{sid}.parquet", reader.schema) as writer:
                    for batch in reader:
                        if self.stop.is_set():
                            raise Interrupted
                        writer.write_batch(batch)
            finally:
                reader.close()

    def _views_over_staging(self) -> None:
        for sid, view in self.views.items():
            uri = (self.folder / f"{sid}.parquet").as_uri()
            self.session.read.parquet(uri).createOrReplaceTempView(view)

    def _batches(self, frame: Any) -> Iterator[pa.RecordBatch]:
        """The result's Arrow batches as the server streams them (the client's iterator,
        which `toLocalIterator` is built on, without its conversion to Python rows)."""
        client = frame._session.client
        plan = frame._plan.to_proto(client)
        for item in client.to_table_as_iterator(plan, frame._plan.observations):
            if isinstance(item, pa.Table):
                yield from item.to_batches()

    def _clean(self) -> None:
        if self.session is not None:
            for view in self.views.values():
                with contextlib.suppress(Exception):
                    self.session.catalog.dropTempView(view)
            with contextlib.suppress(Exception):
                self.session.removeTag(self.tag)
        shutil.rmtree(self.folder, ignore_errors=True)


def _select_all(step_ids: list[str]) -> exp.Expression:
    (only,) = step_ids
    return exp.select("*").from_(exp.to_identifier(only))


def _as_duckdb(
    batches: Iterator[pa.RecordBatch], names: list[str], types: list[str]
) -> pa.RecordBatchReader:
    """The batches as a reader with DuckDB's column names and, where a lossless cast exists,
    the Arrow types DuckDB's result would have (Spark's DATE + INTERVAL is a DATE where
    DuckDB's is a TIMESTAMP; its sum of integers a BIGINT where DuckDB's is a HUGEINT), so
    an answer does not change with the engine that computed it."""
    first = next(batches, None)
    if first is None:
        fields = [pa.field(n, _arrow_of(t) or pa.null()) for n, t in zip(names, types, strict=True)]
        return pa.RecordBatchReader.from_batches(pa.schema(fields), iter(()))
    if len(names) != first.num_columns:  # a mismatch would mislabel columns: keep Spark's
        names, types = first.schema.names, [""] * first.num_columns
    targets: list[pa.DataType] = []
    for column, duck in zip(first.columns, types, strict=True):
        target = _arrow_of(duck)
        if target is not None and target != column.type:
            try:
                column.cast(target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                target = None
        targets.append(column.type if target is None else target)
    schema = pa.schema([pa.field(n, t) for n, t in zip(names, targets, strict=True)])

    def cast(batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = [
            c if c.type == t else c.cast(t, safe=True)
            for c, t in zip(batch.columns, targets, strict=True)
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def gen() -> Iterator[pa.RecordBatch]:
        yield cast(first)
        for batch in batches:
            yield cast(batch)

    return pa.RecordBatchReader.from_batches(schema, gen())


def _arrow_of(duck: str) -> pa.DataType | None:
    """The Arrow type of a scalar DuckDB type, None for the rest (nested, enum...)."""
    name = "TIMESTAMPTZ" if duck == "TIMESTAMP WITH TIME ZONE" else duck
    if name.startswith("DECIMAL("):
        return arrow_type(name)
    return ARROW_TYPES.get(name)


def _probe(remote: str, timeout: float) -> None:
    """Raise OSError unless the sc://host:port accepts a connection within `timeout`."""
    parts = urlsplit(remote)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 15002), timeout):
        pass


def _is_analysis_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"AnalysisException", "ParseException"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _spark_error(exc: Exception) -> Exception:
    """A failure while the merge ran: the query's (an error Spark raised on a value, e.g. an
    ANSI cast) is the merge's 500 with Spark's message; losing the server is a 503."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"SparkConnectGrpcException", "RetriesExceeded"} and not names & {
        "PySparkException",
        "SparkRuntimeException",
        "ArithmeticException",
        "NumberFormatException",
        "DateTimeException",
    }:
        return SparkUnavailable(
            f"the Spark Connect server failed the merge: {_first_line(exc)}",
            suggestion="check the server's log; the request can be retried",
        )
    return SparkMergeFailed(_first_line(exc))
