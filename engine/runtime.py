"""What a running sluice owns, built and run in one place (the HTTP app's lifespan and the
in-process `api.local.open_service` both use it): the catalog (one connector and one query
limiter per database), the process-wide DuckDB sink, the result store and the audit log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from engine.catalog import Catalog
from engine.config import Config
from engine.memory import MemoryPool, MiB, Shares, default_budget, parse_size
from engine.results import DiskResultStore, ResultStore
from engine.sink import Sink
from engine.spark import SparkMerger
from engine.spill import SpillArea
from safety.audit import AuditLog

RESULT_EVICT_EVERY_S = 15.0
log = logging.getLogger("sluice.results")


class Runtime:
    def __init__(
        self, config: Config, *, on_audit_drop: Callable[[int], None] | None = None
    ) -> None:
        server = config.server
        self.config = config
        Path(server.data_dir).mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(
            config.databases,
            ttl_seconds=server.discovery_ttl_seconds,
            max_concurrent_queries=server.max_concurrent_queries_per_database,
            default_timeout=config.safety.query_timeout_seconds,
        )
        self.sink = build_sink(config)
        self.store = result_store(config)
        spark = config.engine.spark
        self.spark = SparkMerger(spark) if spark is not None else None
        audit_path = server.audit_log or str(Path(server.data_dir) / "audit.jsonl")
        self.audit = AuditLog(audit_path, config=config, on_drop=on_audit_drop)

    @contextlib.asynccontextmanager
    async def running(self, *, startup_wait: float | None = None) -> AsyncIterator[Runtime]:
        """Open the audit log and every database (waiting up to `startup_wait` for the first
        discovery), evict expired results in the background; close everything on exit."""
        try:
            async with anyio.create_task_group() as writer:
                await writer.start(self.audit.serve)
                try:
                    await self.store.open()
                    async with anyio.create_task_group() as tg:
                        await tg.start(
                            lambda task_status: self.catalog.serve(
                                startup_wait=startup_wait, task_status=task_status
                            )
                        )
                        tg.start_soon(_evict_results, self.store)
                        yield self
                        tg.cancel_scope.cancel()
                finally:
                    # the writer drains every queued entry, then returns: last, so the
                    # requests that ended during shutdown are in the log
                    self.audit.close()
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.close()
            await self.catalog.close()
            self.sink.close()
            if self.spark is not None:
                await anyio.to_thread.run_sync(self.spark.close)


def result_store(config: Config) -> ResultStore:
    """The store `results.store` names, bounded by the `server` settings."""
    server = config.server
    ttl, count, size = server.result_ttl_seconds, server.max_results, server.max_result_bytes
    if config.results.store == "s3":
        from engine.object_results import ObjectResultStore

        return ObjectResultStore.from_config(
            config.results, server.run_store, ttl=ttl, max_results=count, max_bytes=size
        )
    return DiskResultStore(
        Path(server.data_dir) / "results", ttl=ttl, max_results=count, max_bytes=size
    )


def build_sink(config: Config) -> Sink:
    """The shared sink sized from `limits.memory_budget` (engine.memory): its own share of
    memory and a quarter of `merge_temp_limit` for its temp files; the rest of the disk
    bound goes to the spilled steps' Parquet files and their merges' temp files."""
    limits, data_dir = config.limits, Path(config.server.data_dir)
    budget = parse_size(limits.memory_budget) if limits.memory_budget else default_budget()
    cap = parse_size(limits.merge_memory_limit) if limits.merge_memory_limit else None
    shares = Shares.of(budget, merge_cap=cap, spill_after=limits.spill_after_bytes)
    disk = parse_size(limits.merge_temp_limit)
    spill = SpillArea(data_dir / "spill", disk - disk // 4, shares.spill_after, configured=disk)
    return Sink(
        memory_limit=f"{shares.sink // MiB}MiB",
        temp_directory=str(data_dir / "merge_spill"),
        max_temp_size=f"{max(1, disk // 4 // MiB)}MiB",
        spill=spill,
        pool=MemoryPool(shares.pool, shares.merge_cap),
    )


async def _evict_results(store: ResultStore, every: float = RESULT_EVICT_EVERY_S) -> None:
    """Expired results are deleted in the background, not only when the store is full (a
    failure, e.g. the shared store's index unreachable, is retried next time)."""
    while True:
        await anyio.sleep(every)
        try:
            await anyio.to_thread.run_sync(store.evict)
        except Exception:
            log.exception("evicting stored results failed")
