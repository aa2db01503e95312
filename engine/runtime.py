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
from engine.results import DiskResultStore, ResultStore
from engine.sink import Sink
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
        )
        self.sink = Sink(
            memory_limit=config.limits.merge_memory_limit,
            temp_directory=str(Path(config.server.data_dir) / "merge_spill"),
            max_temp_size=config.limits.merge_temp_limit,
        )
        self.store = result_store(config)
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


async def _evict_results(store: ResultStore, every: float = RESULT_EVICT_EVERY_S) -> None:
    """Expired results are deleted in the background, not only when the store is full (a
    failure, e.g. the shared store's index unreachable, is retried next time)."""
    while True:
        await anyio.sleep(every)
        try:
            await anyio.to_thread.run_sync(store.evict)
        except Exception:
            log.exception("evicting stored results failed")
