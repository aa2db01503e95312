"""Prometheus metrics in a registry of our own (never the global one, so two apps in one
process or a test never collide), the ASGI middleware that records every request, and small
functions the query path calls (`query_finished`, `safety_blocked`).

Several workers (`sluice serve --workers N`) share one view: `serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start, every worker writes its
counters there (prometheus-client's multiprocess mode) and any worker's scrape adds them all
up, so a scrape sees every request whichever worker answers it. Process metrics (RSS, CPU,
open fds) are reported per worker with a `pid` label.

Every label value is bounded: routes are templates (`/v1/runs/{id}`), an unknown route is
`<unmatched>`, methods outside the HTTP verbs are `OTHER`, databases are configured names.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.version import VERSION
from engine.run_state import RunHooks

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# from a fast simple query (~1 ms) to a long federated join
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    float("inf"),
)
# a federated request's peak process RSS, from a small server to a large batch join
RSS_BUCKETS = tuple(float(2**n * 1024**2) for n in range(5, 15)) + (float("inf"),)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared folder of multiprocess mode, when this process runs in it."""
    return os.environ.get(MULTIPROC_ENV) or None


class _Processes(Collector):
    """RSS, CPU seconds and open file descriptors of this process, or of every live worker
    in multiprocess mode (their pids are in the shared folder's file names), from /proc."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes", labels=["pid"]
        )
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "User and system CPU time in seconds", labels=["pid"]
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors", labels=["pid"])
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                with open(f"/proc/{pid}/statm", "rb") as f:
                    pages = int(f.read().split()[1])
                nfds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, ValueError, IndexError):
                continue  # a worker that exited, or no /proc here
            ticks = os.sysconf("SC_CLK_TCK")
            label = [str(pid)]
            rss.add_metric(label, float(pages * os.sysconf("SC_PAGE_SIZE")))
            cpu.add_metric(label, (int(fields[11]) + int(fields[12])) / ticks)
            fds.add_metric(label, float(nfds))
        yield rss
        yield cpu
        yield fds

    @staticmethod
    def _pids() -> list[int]:
        folder = multiprocess_dir()
        pids = {os.getpid()}
        if folder is not None:
            for name in os.listdir(folder):
                stem = name.rsplit(".", 1)[0]
                tail = stem.rsplit("_", 1)[-1]
                if tail.isdigit():
                    pids.add(int(tail))
        return sorted(pids)


class _Sources(Collector):
    """Read at scrape time: pool use per database (from the catalog) and result-store
    bytes, so nothing has to push them."""

    def __init__(self) -> None:
        self.catalog: Any = None
        self.results: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = GaugeMetricFamily(
            "sluice_db_pool_in_use",
            "Connections (or query slots) in use per database",
            labels=["database"],
        )
        size = GaugeMetricFamily(
            "sluice_db_pool_size", "Pool size per database", labels=["database"]
        )
        up = GaugeMetricFamily(
            "sluice_db_reachable", "1 when the database answered last probe", labels=["database"]
        )
        for name, state in (getattr(self.catalog, "states", None) or {}).items():
            used, total = pool_usage(state)
            in_use.add_metric([name], used)
            size.add_metric([name], total)
            up.add_metric([name], 1.0 if state.reachable else 0.0)
        yield in_use
        yield size
        yield up
        stored = GaugeMetricFamily(
            "sluice_result_store_bytes",
            "Bytes of stored results (of the whole shared store with results.store: s3)",
        )
        stored.add_metric([], float(getattr(self.results, "nbytes", 0) or 0))
        yield stored
        count = GaugeMetricFamily("sluice_result_store_results", "Stored results")
        count.add_metric([], float(len(self.results)) if self.results is not None else 0.0)
        yield count


def pool_usage(state: Any) -> tuple[float, float]:
    """(in use, size) of a database's pool, from the connector's `pool_stats()`; without a
    pool (embedded databases, or before it opened) the query slots in use and the
    configured pool size."""
    stats = state.connector.pool_stats()
    if stats is not None:
        return float(stats.in_use), float(stats.size)
    limiter = state.limiter
    return float(limiter.borrowed_tokens), float(state.config.pool_size)


class Metrics:
    """Every series sluice exports, in one CollectorRegistry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sluice_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "sluice_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sluice_http_requests_in_flight",
            "HTTP requests in progress",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.query_seconds = Histogram(
            "sluice_query_duration_seconds",
            "Query duration (pipeline, database and merge) per database",
            ["database"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queries = Counter(
            "sluice_queries",
            "Queries by database, language and outcome",
            ["database", "language", "outcome"],
            registry=r,
        )
        self.rows = Counter(
            "sluice_rows_streamed", "Rows streamed from each database", ["database"], registry=r
        )
        self.blocks = Counter(
            "sluice_safety_blocks", "Requests blocked, by pipeline stage", ["stage"], registry=r
        )
        self.runs_queued = Gauge(
            "sluice_runs_queued",
            "Runs waiting in the queue",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.runs_running = Gauge(
            "sluice_runs_running",
            "Runs executing (all workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.runs_finished = Counter(
            "sluice_runs_finished", "Runs finished, by status", ["status", "reason"], registry=r
        )
        self.run_seconds = Histogram(
            "sluice_run_duration_seconds",
            "Run execution time",
            ["status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.peak_rss = Histogram(
            "sluice_federated_peak_rss_bytes",
            "Peak resident memory of the process while a federated request ran",
            buckets=RSS_BUCKETS,
            registry=r,
        )
        self.spilled_steps = Counter(
            "sluice_spilled_steps", "Steps streamed to Parquet past spill_after_bytes", registry=r
        )
        self.spilled_bytes = Counter(
            "sluice_spilled_bytes", "Bytes of Parquet written by spilled steps", registry=r
        )
        self.idempotent_replays = Counter(
            "sluice_runs_idempotent_replays", "Submits answered with an existing run", registry=r
        )
        self.audit_dropped = Counter(
            "sluice_audit_entries_dropped",
            "Audit entries lost to a full writer queue (must stay 0)",
            registry=r,
        )
        self.build = Gauge(
            "sluice_build_info",
            "Always 1; the labels say which sluice runs",
            ["version", "python"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build.labels(VERSION, platform.python_version()).set(1)
        self.sources = _Sources()
        r.register(self.sources)
        self.processes = _Processes()
        r.register(self.processes)
        # labelled children of queries/rows by (database, language, outcome)
        self.query_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def render(self) -> bytes:
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        # every worker's series from the shared folder, plus this worker's live gauges
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=folder)  # type: ignore[no-untyped-call]
        merged.register(self.sources)
        merged.register(self.processes)
        return generate_latest(merged)

    @staticmethod
    def process_exited() -> None:
        """At a worker's shutdown: its live gauges (in flight, runs) stop counting."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


METRICS = Metrics()


def bind(catalog: Any = None, results: Any = None, metrics: Metrics = METRICS) -> None:
    """Point the scrape-time collectors at the app's catalog and result store."""
    metrics.sources.catalog = catalog
    metrics.sources.results = results


def query_finished(
    database: str, language: str, outcome: str, rows: int = 0, metrics: Metrics = METRICS
) -> None:
    """Call once per query: outcome is ok, blocked, error or timeout. The labelled children
    are kept (labels() costs ~3 us a call); every label is bounded (configured names)."""
    key = (database, language, outcome)
    children = metrics.query_children.get(key)
    if children is None:
        children = metrics.query_children[key] = (
            metrics.queries.labels(database, language, outcome),
            metrics.rows.labels(database),
        )
    children[0].inc()
    if rows:
        children[1].inc(rows)


def query_seconds(database: str, seconds: float, metrics: Metrics = METRICS) -> None:
    """Once per request and database it touched: the request's whole duration."""
    metrics.query_seconds.labels(database).observe(seconds)


def federated_memory(
    peak_rss_bytes: int, spilled_steps: int, spilled_bytes: int, metrics: Metrics = METRICS
) -> None:
    """Once per federated request that ran: its peak RSS and what it spilled."""
    metrics.peak_rss.observe(float(peak_rss_bytes))
    if spilled_steps:
        metrics.spilled_steps.inc(spilled_steps)
        metrics.spilled_bytes.inc(spilled_bytes)


def safety_blocked(stage: str, metrics: Metrics = METRICS) -> None:
    metrics.blocks.labels(stage).inc()


def audit_dropped(n: int, metrics: Metrics = METRICS) -> None:
    metrics.audit_dropped.inc(n)


class RunMetrics(RunHooks):
    """The run manager's hooks (engine.run_state.RunHooks) writing into Metrics."""

    def __init__(self, metrics: Metrics = METRICS) -> None:
        self.m = metrics

    def finished(self, status: str, reason: str | None, secs: float | None) -> None:
        self.m.runs_finished.labels(status, reason or "").inc()
        if secs is not None:
            self.m.run_seconds.labels(status).observe(secs)

    def gauges(self, queued: int, running: int) -> None:
        self.m.runs_queued.set(queued)
        self.m.runs_running.set(running)

    def replayed(self) -> None:
        self.m.idempotent_replays.inc()

    def deleted(self, run_id: str) -> None:
        pass


class MetricsMiddleware:
    """Pure ASGI: counts each HTTP request by method, route template and status, and times
    it. The router writes the matched route into the scope; nothing matched is
    `<unmatched>`, so a scan of random paths cannot grow the label set."""

    def __init__(self, app: ASGIApp, metrics: Metrics = METRICS) -> None:
        self.app = app
        self.m = metrics
        # labelled children by (method, route, status): labels() costs ~3 us a call
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.m.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.m.in_flight.dec()
            self.record(scope, status, started)

    def record(self, scope: Scope, status: int, started: float) -> None:
        """Count one finished request and its duration (api/front.py calls it too)."""
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope.get("method", "GET")
        method = method if method in _METHODS else "OTHER"
        key = (method, template, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.m.requests.labels(method, template, str(status)),
                self.m.request_seconds.labels(method, template),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
