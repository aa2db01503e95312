"""The actor graph: one task group per request, one task per step, one writer into DuckDB.

Roots start at once, concurrently. A step that `depends_on` parents without a link waits for
them to finish; a linked child starts on its parent's first batch of distinct link values
and runs one native query per chunk of at most `max_link_values_per_batch` values
(`link_batches_in_flight` at a time, and never more than the database's limiter allows),
while the parent is still streaming. Every step sends its batches into one bounded stream
read by the request's writer, so a slow sink slows the producers.

Strategies for a linked child (see DESIGN.md section 3):
- `link`: filtered native queries, values as bound parameters (`connector.with_link`).
- `link+scan`: past `full_scan_after` distinct values in all, filtered queries stop; once the
  parent has finished, one unfiltered query runs and its rows are kept only when they match
  a value not sent yet (past FULL_SCAN_AFTER keys; below it, key batches were faster).
- an empty parent: zero rows, never an unfiltered query (the table is created from a query
  that cannot return rows, so the merge still sees the child's columns).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream as ObjectSendStream

from connectors.base import Batch, Column, Connector, LinkFilter, Statement
from connectors.errors import QueryTimedOut
from engine.errors import InvalidQuery
from engine.link import LinkFeed, column_index, distinct_values, keep_matching
from engine.plan import Node, Plan
from engine.sink import Message
from engine.statements import to_statement
from safety.config import SafetyConfig
from safety.languages import registry as languages
from safety.types import CheckedStep

SINK_BUFFER = 16  # batches in flight between the steps and the writer
SMALL_ROWS = 1_000  # a step capped at this or less stays on the row path (dashboards)
# Distinct link values after which a linked child stops sending key batches and scans.
# Measured (bench/federated.py, 1M events -> 100k keys into a 1M-row orders table): key
# batches all the way took 1.24 s / 245 MB peak RSS with a MariaDB child and 1.79 s with a
# PostgreSQL one; switching to a scan at 50k keys took 1.88 s / 388 MB and 2.02 s. A scan
# only pays once the keys are a large share of the child table, which the engine cannot see.
FULL_SCAN_AFTER = 200_000
TIMEOUT_GRACE_S = 5.0  # the connector stops the statement on the server; this is a backstop


class Outcome(StrEnum):
    """How a step of a federated request ended (`metadata.steps[].status`)."""

    PENDING = "pending"
    OK = "ok"
    TRUNCATED = "truncated"  # stopped at its row cap
    FAILED = "failed"
    CANCELLED = "cancelled"


class Strategy(StrEnum):
    """How a step ran: a root, after its parents, filtered by a parent's link values, or
    switched to one scan after FULL_SCAN_AFTER link values."""

    ROOT = "root"
    AFTER = "after"
    LINK = "link"
    LINK_SCAN = "link+scan"


class StepMeta(msgspec.Struct, kw_only=True):
    """What `metadata.steps` reports for one step (times in milliseconds since the start)."""

    step_id: str
    database: str
    table: str
    status: Outcome = Outcome.PENDING
    strategy: Strategy = Strategy.ROOT
    rows_returned: int = 0
    batches: int = 0
    native_queries: int = 0
    link_values: int = 0
    latency_ms: float = 0.0
    first_batch_ms: float | None = None
    started_ms: float | None = None


class StepProgress(msgspec.Struct, kw_only=True):
    """A progress event: `event` is started, native_query, batch or finished."""

    step_id: str
    event: str
    rows: int
    batches: int
    at_ms: float


class StepError(Exception):
    """Internal: a step's failure tagged with the step (unwrapped at the engine boundary)."""

    def __init__(self, step_id: str, database: str, cause: BaseException) -> None:
        super().__init__(step_id, database, cause)
        self.step_id = step_id
        self.database = database
        self.cause = cause


@dataclass
class StepRun:
    node: Node
    checked: CheckedStep
    connector: Connector
    limiter: anyio.CapacityLimiter
    meta: StepMeta
    done: anyio.Event = field(default_factory=anyio.Event)
    columns: list[Column] | None = None
    feeds: list[LinkFeed] = field(default_factory=list)  # to linked children
    feed: LinkFeed | None = None  # from the linked parent
    stop: anyio.CancelScope | None = None  # cancelled once the row cap is reached
    warnings: list[str] = field(default_factory=list)
    reserved: int = 0

    @property
    def step_id(self) -> str:
        return self.node.step_id

    @property
    def database(self) -> str:
        return self.node.spec.database


@dataclass
class Execution:
    """Runs one plan; `runs` holds every step's state and metadata afterwards."""

    plan: Plan
    checked: Mapping[str, CheckedStep]
    connectors: Mapping[str, Connector]
    safety: SafetyConfig
    limiters: Mapping[str, anyio.CapacityLimiter]
    on_progress: Callable[[StepProgress], None] | None = None
    batch_size: int | None = None
    full_scan_after: int = FULL_SCAN_AFTER
    started: float = field(default_factory=time.perf_counter)
    runs: dict[str, StepRun] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sid in self.plan.order:
            node = self.plan.nodes[sid]
            db = node.spec.database
            self.runs[sid] = StepRun(
                node=node,
                checked=self.checked[sid],
                connector=self.connectors[db],
                limiter=self.limiters[db],
                meta=StepMeta(
                    step_id=sid,
                    database=db,
                    table=node.spec.table,
                    strategy=(
                        Strategy.LINK
                        if node.link
                        else (Strategy.AFTER if node.parents else Strategy.ROOT)
                    ),
                ),
            )
        for run in self.runs.values():
            if run.node.link:
                feed = LinkFeed(run.node.link.parent, run.node.link.from_column)
                self.runs[run.node.link.parent].feeds.append(feed)
                run.feed = feed

    def _ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def _progress(self, run: StepRun, event: str) -> None:
        if self.on_progress is not None:
            self.on_progress(
                StepProgress(
                    step_id=run.step_id,
                    event=event,
                    rows=run.meta.rows_returned,
                    batches=run.meta.batches,
                    at_ms=self._ms(),
                )
            )

    async def run(self, send: ObjectSendStream[Message]) -> None:
        """Run every step; each gets a clone of `send`, closed when the step finishes."""
        async with send, anyio.create_task_group() as tg:
            for sid in self.plan.order:
                tg.start_soon(self._actor, self.runs[sid], send.clone(), name=f"step {sid}")

    # -- one step --------------------------------------------------------------------------

    async def _actor(self, run: StepRun, send: ObjectSendStream[Message]) -> None:
        try:
            async with send:
                for parent in run.node.waits_for:
                    await self.runs[parent].done.wait()
                run.meta.started_ms = self._ms()
                self._progress(run, "started")
                with anyio.CancelScope() as run.stop:
                    if run.feed is None:
                        await self._stream(run, self._statement(run), send)
                    else:
                        await self._linked(run, send)
                if run.meta.batches == 0:
                    await self._empty_table(run, send)
                await send.send((run.step_id, None))
        except anyio.get_cancelled_exc_class():
            run.meta.status = Outcome.CANCELLED
            raise
        except TimeoutError as exc:
            run.meta.status = Outcome.FAILED
            timeout = QueryTimedOut(run.database, run.checked.timeout)
            raise StepError(run.step_id, run.database, timeout) from exc
        except Exception as exc:
            run.meta.status = Outcome.FAILED
            cause = first_error(exc)
            if isinstance(cause, TimeoutError):
                cause = QueryTimedOut(run.database, run.checked.timeout)
            raise StepError(run.step_id, run.database, cause) from exc
        run.meta.status = Outcome.TRUNCATED if run.meta.status == Outcome.TRUNCATED else Outcome.OK
        run.meta.latency_ms = round(self._ms() - (run.meta.started_ms or 0.0), 3)
        for feed in run.feeds:
            feed.close()
        run.done.set()
        self._progress(run, "finished")

    def _statement(self, run: StepRun, *, linked: bool = False) -> Statement:
        cap = run.checked.row_cap
        bulk = run.node.link is not None or cap is None or cap > SMALL_ROWS
        size = self.batch_size or (10_000 if bulk else max(1, min((cap or 0) + 1, 10_000)))
        return to_statement(run.checked, bulk=bulk, linked=linked, batch_size=size)

    async def _stream(
        self,
        run: StepRun,
        statement: Statement,
        send: ObjectSendStream[Message],
        keep: Callable[[Batch], Batch] | None = None,
    ) -> None:
        """One native query: every batch goes to the sink (and its link values onward)."""
        async with run.limiter:
            run.meta.native_queries += 1
            self._progress(run, "native_query")
            with anyio.fail_after(run.checked.timeout + TIMEOUT_GRACE_S):
                async with _closing(run.connector.stream(statement)) as batches:
                    async for batch in batches:
                        await self._emit(run, keep(batch) if keep else batch, send)

    async def _emit(self, run: StepRun, batch: Batch, send: ObjectSendStream[Message]) -> None:
        if run.columns is None:
            run.columns = list(batch.columns)
            run.meta.first_batch_ms = self._ms()
            for feed in run.feeds:
                self._bind_feed(run, feed)
        n = len(batch)
        cap = run.checked.row_cap
        # rows are reserved before the send (chunks of a linked child emit concurrently)
        # and counted once the writer has them
        if cap is not None and run.reserved + n > cap:
            n = max(0, cap - run.reserved)
            batch = _head(batch, n)
            if run.meta.status != Outcome.TRUNCATED:
                run.meta.status = Outcome.TRUNCATED
                run.warnings.append(
                    f"step {run.step_id} returned more than {cap} rows; result truncated to {cap}"
                )
        run.reserved += n
        for feed in run.feeds:
            index = column_index(batch.columns, feed.column)
            if index is not None and n:
                feed.add(distinct_values(batch, index))
        await send.send((run.step_id, batch))
        run.meta.rows_returned += n
        run.meta.batches += 1
        self._progress(run, "batch")
        if run.meta.status == Outcome.TRUNCATED and run.stop is not None:
            run.stop.cancel()  # stop every native query of this step; the rows are kept

    def _bind_feed(self, run: StepRun, feed: LinkFeed) -> None:
        assert run.columns is not None
        index = column_index(run.columns, feed.column)
        if index is None:
            names = ", ".join(c.name for c in run.columns)
            raise InvalidQuery(
                f"link_from {feed.column!r}: step {run.step_id!r} has no such "
                f"column (it returned: {names})",
                step_id=run.step_id,
            )
        feed.type = run.columns[index].type

    async def _linked(self, run: StepRun, send: ObjectSendStream[Message]) -> None:
        feed = run.feed
        link = run.node.link
        assert feed is not None and link is not None
        slots = anyio.Semaphore(self.safety.link_batches_in_flight)
        base = self._statement(run, linked=True)

        async def one_chunk(values: list[Any], out: ObjectSendStream[Message]) -> None:
            try:
                async with out:
                    statement = run.connector.with_link(
                        base, LinkFilter(link.to_column, values, feed.type or "VARCHAR")
                    )
                    await self._stream(run, statement, out)
            finally:
                slots.release()

        switch = False
        async with anyio.create_task_group() as tg:
            while (values := await feed.take(self.safety.max_link_values_per_batch)) is not None:
                run.meta.link_values += len(values)
                await slots.acquire()
                tg.start_soon(one_chunk, values, send.clone())
                if len(feed.seen) > self.full_scan_after:
                    switch = True
                    break
        if switch:
            await self._scan_rest(run, send)

    async def _scan_rest(self, run: StepRun, send: ObjectSendStream[Message]) -> None:
        """Past `full_scan_after` values: one unfiltered query, filtered here by the values
        not sent yet (rows for values already sent came from the filtered queries)."""
        feed = run.feed
        link = run.node.link
        assert feed is not None and link is not None
        await self.runs[feed.parent].done.wait()
        rest = set(feed.drain())
        run.meta.strategy = Strategy.LINK_SCAN
        run.meta.link_values += len(rest)
        if not rest:
            return
        index_cache: dict[int, int | None] = {}
        scanned = 0

        def keep(batch: Batch) -> Batch:
            nonlocal scanned
            scanned += len(batch)
            index = index_cache.setdefault(
                id(batch.columns), column_index(batch.columns, link.to_column)
            )
            if index is None:
                raise InvalidQuery(
                    f"link_to {link.to_column!r}: step {run.step_id!r} has no such column",
                    step_id=run.step_id,
                )
            return keep_matching(batch, index, rest)

        await self._stream(run, self._statement(run), send, keep)
        cap = run.checked.row_cap
        if cap is not None and scanned > cap:
            run.warnings.append(
                f"step {run.step_id} switched to a full scan after {self.full_scan_after} link "
                f"values and the scan reached its row cap of {cap} before the link filter; "
                "rows may be missing"
            )

    async def _empty_table(self, run: StepRun, send: ObjectSendStream[Message]) -> None:
        """No batch came back: learn the columns from a query that cannot return rows, so
        the step table exists for the merge (an empty parent never runs its child
        unfiltered)."""
        column = run.node.link.to_column if run.node.link else None
        language = languages.get(run.checked.language)
        probe = language.empty_probe(self._statement(run), run.connector, column)
        columns: list[Column] = []
        async with run.limiter:
            with anyio.fail_after(run.checked.timeout + TIMEOUT_GRACE_S):
                async with _closing(run.connector.stream(probe)) as batches:
                    async for batch in batches:
                        columns = columns or list(batch.columns)
        if columns:
            await send.send((run.step_id, Batch(columns, rows=[])))
        else:
            run.warnings.append(
                f"step {run.step_id} returned no rows and its columns are "
                "unknown; a merge that names them will fail"
            )


def first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups; cancellations are skipped."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [first_error(e) for e in exc.exceptions]
    real = [e for e in leaves if not isinstance(e, anyio.get_cancelled_exc_class())]
    return (real or leaves)[0]


def _head(batch: Batch, n: int) -> Batch:
    if batch.arrow is not None:
        return Batch(batch.columns, arrow=batch.arrow.slice(0, n))
    return Batch(batch.columns, rows=(batch.rows or [])[:n])


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Batch]) -> AsyncIterator[AsyncIterator[Batch]]:
    """Close the connector's generator on exit, so a stopped step stops its statement."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
