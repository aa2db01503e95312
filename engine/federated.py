"""The federated engine's entry point: plan, execute into the sink, merge, store, report.

    result = await run_federated(checked_plan, connectors, sink=sink, store=store,
                                 safety=config.safety, request_id=request_id)

Compile and execute stay apart: `build_plan` validates and plans (its repr is the explain
output), `Execution` runs the actor graph, then the merge runs in DuckDB and its result is
stored for `/v1/results`. Exception groups are unwrapped once, here, into `StepFailed`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

import anyio
import duckdb
import msgspec

from connectors.base import Connector
from connectors.errors import QueryFailed
from engine.errors import (
    InvalidQuery,
    InvalidRequest,
    MergeFailed,
    MergeReadsStripped,
    SpillLimitExceeded,
    StepFailed,
)
from engine.execute import FULL_SCAN_AFTER, Execution, StepError, StepMeta, StepProgress
from engine.ir import FederatedQuery
from engine.memory import RSS
from engine.merge import parse_merge, qualify
from engine.offload import interruptible
from engine.plan import CheckedPlan, Plan, build_plan
from engine.results import Interrupted, ResultStore, StoredResult
from engine.sink import Message, RequestTables, Sink, quote
from engine.spark import SparkMerger
from engine.spark_handoff import Handoff
from safety.config import SafetyConfig

DEFAULT_PAGE_SIZE = 100  # GET /v1/results default `size`
MERGE_BATCH_ROWS = 65_536

__all__ = [
    "FederatedResult",
    "MemoryReport",
    "ResultPages",
    "StepMeta",
    "StepProgress",
    "explain",
    "run_federated",
]


class ResultPages(msgspec.Struct, kw_only=True):
    """Where the whole result can be paged: `path` plus `?page=N&size=M`."""

    path: str
    size: int
    total_pages: int


class FederatedResult(msgspec.Struct, kw_only=True):
    """The outcome of a federated request.

    `rows` holds the first `safety.inline_rows` rows (dicts, in the merge's order); `truncated`
    is True when `row_count` is larger (the rest is paged through `result_pages.path`).
    Steps cut at their row cap are reported in `warnings` and `steps[].status == "truncated"`.
    """

    request_id: str
    columns: list[str]
    rows: list[dict[str, object]]
    row_count: int
    truncated: bool
    steps: list[StepMeta]
    merge_latency_ms: float | None
    execution_time_ms: float
    warnings: list[str]
    result_pages: ResultPages | None
    plan: str
    dropped_steps: list[str] = msgspec.field(default_factory=list)
    memory: MemoryReport | None = None
    merge_engine: str | None = None  # "spark" when the merge was handed to Spark


class MemoryReport(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`metadata.memory`: the process's peak RSS while the request ran (the whole process:
    requests running beside it count too), the steps streamed to Parquet and their bytes,
    and the merge's DuckDB memory_limit when it ran in a DuckDB of its own."""

    peak_rss_bytes: int
    spilled_steps: list[str] = msgspec.field(default_factory=list)
    spilled_bytes: int = 0
    merge_memory_limit_bytes: int | None = None


def explain(
    query: FederatedQuery,
    databases: Mapping[str, object] | list[str],
    keep: list[str] | None = None,
) -> Plan:
    """Validate and plan without running anything (`dry_run`); repr(plan) is the tree."""
    return build_plan(query, list(databases), keep)


async def run_federated(
    checked_plan: CheckedPlan,
    connectors: Mapping[str, Connector],
    *,
    sink: Sink,
    store: ResultStore,
    safety: SafetyConfig,
    request_id: str,
    on_progress: Callable[[StepProgress], None] | None = None,
    limiters: Mapping[str, anyio.CapacityLimiter] | None = None,
    batch_size: int | None = None,
    full_scan_after: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    owner: str | None = None,
    spark: SparkMerger | None = None,
) -> FederatedResult:
    """Run a validated-and-checked federated query and store its result under request_id.

    Args:
        checked_plan: the request, its validated plan and the safety pipeline's checked
            steps (a step missing from them was stripped; its dependants are dropped).
        connectors: open connectors by database name.
        limiters: per-database concurrency limiters (the catalog's); default: one per
            database sized by its pool.
        batch_size: rows per connector batch (default: 10,000; tests use small ones).
        full_scan_after: distinct link values after which a child scans instead.
        owner: the principal the stored result belongs to (only it may page it).
        spark: the hand-off to Spark (engine.spark), when configured.

    Raises:
        InvalidQuery / StepUnknownDatabase / MergeBlocked: the DAG or merge is invalid.
        StepFailed: a step failed (the others were cancelled); `cause` is the connector's.
        MergeFailed: DuckDB rejected the merge (its message is kept).
    """
    started = time.perf_counter()
    query, checked = checked_plan.query, checked_plan.steps
    plan = checked_plan.plan.keep(list(checked))  # not validated again
    merge_text = _merge_sql(plan)
    if plan.dropped and merge_text is not None:
        tree = plan.merge_tree if plan.merge_tree is not None else parse_merge(merge_text)
        missing = sorted({t.lower() for t in plan.dropped} & _tables_of(tree))
        if missing:
            raise MergeReadsStripped(missing[0])
    warnings = [
        f"step {sid} was dropped: it or a step it depends on was stripped by the safety policy"
        for sid in plan.dropped
    ]
    if not plan.nodes:
        raise InvalidRequest("every step was stripped by the safety policy; nothing to run")
    if query.dry_run:
        return _result(request_id, plan, None, [], warnings, None, started, page_size)
    merge_sql = _merge_sql(plan)
    handoff = Handoff.prepare(query.engine, spark, plan, merge_sql)
    if limiters is None:
        limiters = {
            name: anyio.CapacityLimiter(getattr(getattr(c, "config", None), "pool_size", 10))
            for name, c in connectors.items()
        }
    execution = Execution(
        plan=plan,
        checked=checked,
        connectors=connectors,
        safety=safety,
        limiters=limiters,
        on_progress=on_progress,
        batch_size=batch_size,
        full_scan_after=full_scan_after or FULL_SCAN_AFTER,
    )
    with RSS.watch() as peak:
        tables = await sink.open_request(request_id)
        try:
            await _execute(execution, tables)
            for sid in plan.order:
                warnings.extend(execution.runs[sid].warnings)
            merge_started = time.perf_counter()
            await tables.prepare_merge()
            stored = await handoff.merge(tables, plan, store, request_id, safety.inline_rows, owner)
            if stored is None:
                stored = await _merge_and_store(
                    tables, plan, merge_sql, store, request_id, safety.inline_rows, owner
                )
            warnings.extend(handoff.warnings)
            merge_ms = round((time.perf_counter() - merge_started) * 1000, 3)
        finally:
            await tables.drop()
    steps = [execution.runs[sid].meta for sid in plan.order]
    result = _result(request_id, plan, stored, steps, warnings, merge_ms, started, page_size)
    result.memory = MemoryReport(
        peak_rss_bytes=peak.nbytes,
        spilled_steps=tables.spilled,
        spilled_bytes=tables.spill.bytes_on_disk if tables.spill is not None else 0,
        merge_memory_limit_bytes=tables.merge_memory_limit,
    )
    result.merge_engine = handoff.ran_on
    return result


OFF_LOOP_CHARS = 4_096  # a request with more text than this is planned in a worker thread


def request_chars(query: FederatedQuery) -> int:
    return len(query.merge or "") + sum(len(s.query) for s in query.steps)


async def _execute(execution: Execution, tables: RequestTables) -> None:
    send, receive = anyio.create_memory_object_stream[Message](8)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(tables.serve, receive)
            await execution.run(send)
    except BaseExceptionGroup as group:
        raise _unwrap(group, execution) from None


def _unwrap(group: BaseExceptionGroup, execution: Execution) -> BaseException:
    """The one error to report: the first step failure (the rest were cancelled)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    # a step that found the writer gone (it failed: a type, the spill bound) is not the cause
    broken = (anyio.BrokenResourceError, anyio.ClosedResourceError)
    writer_failed = any(
        not isinstance(e, StepError | anyio.get_cancelled_exc_class()) for e in leaves
    )
    if writer_failed:
        leaves = [
            e for e in leaves if not (isinstance(e, StepError) and isinstance(e.cause, broken))
        ]
    for exc in leaves:
        if isinstance(exc, StepError):
            if isinstance(exc.cause, InvalidRequest):
                return exc.cause  # a bad link column is the client's mistake: 400
            if (bad := _bad_link_to(exc, execution)) is not None:
                return bad
            return StepFailed(exc.step_id, exc.database, exc.cause)
    for exc in leaves:
        if isinstance(exc, duckdb.Error):  # the writer: a value the declared type refused
            return StepFailed("sink", "duckdb", exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return leaves[0] if leaves else group


def _bad_link_to(exc: StepError, execution: Execution) -> InvalidQuery | None:
    """A linked query the database refused over its link column: the child's result has no
    such column, the client's mistake (400 naming it), as a bad link_from is."""
    node = execution.plan.nodes.get(exc.step_id)
    if node is None or node.link is None or not isinstance(exc.cause, QueryFailed):
        return None
    detail = getattr(exc.cause, "message", None) or str(exc.cause)
    column = node.link.to_column
    if column.lower() not in detail.lower() or "column" not in detail.lower():
        return None
    return InvalidQuery(
        f"step {exc.step_id!r}: link_to {column!r} is not a column of its query's result "
        f"({detail})",
        step_id=exc.step_id,
        suggestion="name a column the step's query returns",
    )


def _merge_sql(plan: Plan) -> str | None:
    """The merge text (already checked by build_plan), or None for a lone step's table."""
    return plan.merge if plan.merge and plan.merge.strip() else None


async def _merge_and_store(
    tables: RequestTables,
    plan: Plan,
    merge: str | None,
    store: ResultStore,
    request_id: str,
    inline_rows: int,
    owner: str | None,
) -> StoredResult:
    """The merge, in a worker thread that a cancel or a timeout interrupts (DuckDB's
    `interrupt()`, and the result write stops at its next batch)."""
    stop = threading.Event()

    def run() -> StoredResult:
        sql = _merge_text(tables, plan, merge)  # parsing a large merge is CPU: off the loop
        try:
            reader = tables.merge_cursor.sql(sql).to_arrow_reader(MERGE_BATCH_ROWS)
        except duckdb.Error as exc:
            raise _merge_error(exc, stop, tables) from exc
        try:
            return store.store_reader(
                request_id, reader, head_rows=inline_rows, owner=owner, stop=stop
            )
        except duckdb.Error as exc:
            raise _merge_error(exc, stop, tables) from exc
        finally:
            reader.close()  # a write stopped early leaves DuckDB's result open otherwise

    def interrupt() -> None:
        stop.set()
        tables.merge_cursor.interrupt()

    return await interruptible(run, interrupt)


def _merge_error(exc: duckdb.Error, stop: threading.Event, tables: RequestTables) -> Exception:
    if stop.is_set():
        return Interrupted()
    if tables.spill is not None and "max_temp_directory_size" in str(exc):
        return SpillLimitExceeded(tables.spill.disk.configured, "the merge")
    return MergeFailed(_duckdb_message(exc, tables.schema))


def _merge_text(tables: RequestTables, plan: Plan, merge: str | None) -> str:
    if merge is None:
        (only,) = plan.order
        return f"SELECT * FROM {tables.table_name(only)}"
    tree = parse_merge(merge)
    missing = sorted({t.lower() for t in plan.dropped} & _tables_of(tree))
    if missing:
        raise MergeReadsStripped(missing[0])
    return qualify(tree, tables.schema, list(plan.nodes))


def _tables_of(tree: object) -> set[str]:
    from sqlglot import exp

    assert isinstance(tree, exp.Expression)
    return {t.name.lower() for t in tree.find_all(exp.Table)}


def _duckdb_message(exc: BaseException, schema: str) -> str:
    # the request's schema name is an internal detail; show step tables as the client wrote
    return str(exc).replace(f"{quote(schema)}.", "").replace(f"{schema}.", "")


def _result(
    request_id: str,
    plan: Plan,
    stored: StoredResult | None,
    steps: list[StepMeta],
    warnings: list[str],
    merge_ms: float | None,
    started: float,
    page_size: int,
) -> FederatedResult:
    total = stored.total if stored else 0
    pages = None
    if stored is not None:
        pages = ResultPages(
            path=f"/v1/results/{request_id}",
            size=page_size,
            total_pages=max(1, math.ceil(total / page_size)),
        )
    return FederatedResult(
        request_id=request_id,
        columns=stored.columns if stored else [],
        rows=stored.head if stored else [],
        row_count=total,
        truncated=stored is not None and total > len(stored.head),
        steps=steps,
        merge_latency_ms=merge_ms,
        execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
        warnings=warnings,
        result_pages=pages,
        plan=repr(plan),
        dropped_steps=list(plan.dropped),
    )
