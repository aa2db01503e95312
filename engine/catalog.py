"""Connections and discovered schemas of every configured database, kept fresh in the
background. A database that cannot be reached at start is listed with reachable=False and
its error, retried with backoff, and never stops the server."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import anyio
import msgspec
from anyio.abc import TaskStatus

from connectors import registry
from connectors.base import Connector, TableInfo
from connectors.config import DatabaseConfig
from connectors.errors import ConnectorError, SluiceError

log = logging.getLogger("sluice.catalog")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
MISS_REFRESH_MIN_S = 5.0  # an unknown table triggers at most one rediscovery per this period


@dataclass
class DatabaseState:
    """What the server knows of one database right now."""

    config: DatabaseConfig
    connector: Connector
    limiter: anyio.CapacityLimiter
    reachable: bool = False
    error: str | None = None
    tables: list[TableInfo] = field(default_factory=list)
    by_name: dict[str, TableInfo] = field(default_factory=dict)
    discovered_at: float = 0.0
    opened: bool = False
    refresh_now: anyio.Event = field(default_factory=anyio.Event)
    ready: anyio.Event = field(default_factory=anyio.Event)

    def table(self, name: str) -> TableInfo | None:
        found = self.by_name.get(name)
        if found is None and "." not in name:
            for schema in self.config.default_schemas():
                found = self.by_name.get(f"{schema}.{name}")
                if found is not None:
                    break
        if found is None:
            found = self.by_name.get(name.lower())
        return found


def _with_timeout(db: DatabaseConfig, default_timeout: float | None) -> DatabaseConfig:
    """The settings a connector opens with: a database without its own
    query_timeout_seconds takes the safety timeout, so its sessions start with the bound
    GUARDRAILS gives every read and no statement has to set (and reset) it per query."""
    if db.query_timeout_seconds is not None or default_timeout is None:
        return db
    return msgspec.structs.replace(db, query_timeout_seconds=default_timeout)


class Catalog:
    """Owns one connector per database; `serve()` keeps them open and their schemas cached."""

    def __init__(
        self,
        databases: list[DatabaseConfig],
        *,
        ttl_seconds: float,
        max_concurrent_queries: int,
        default_timeout: float | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.states: dict[str, DatabaseState] = {}
        for db in databases:
            self.states[db.name] = DatabaseState(
                config=db,
                connector=registry.create(_with_timeout(db, default_timeout)),
                limiter=anyio.CapacityLimiter(max_concurrent_queries),
            )

    def names(self) -> list[str]:
        return list(self.states)

    def get(self, name: str) -> DatabaseState | None:
        return self.states.get(name)

    @property
    def reachable_count(self) -> int:
        return sum(1 for s in self.states.values() if s.reachable)

    async def serve(
        self,
        *,
        startup_wait: float | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open and discover every database, then refresh in the background forever.

        Reports started once each database has either been discovered or failed its first
        attempt (bounded by `startup_wait`), so the first /v1/databases is meaningful.
        """
        async with anyio.create_task_group() as tg:
            for state in self.states.values():
                tg.start_soon(self._keep, state)
            wait = startup_wait
            if wait is None:
                wait = (
                    max((s.config.connect_timeout_seconds for s in self.states.values()), default=0)
                    + 10.0
                )
            with anyio.move_on_after(wait):
                for state in self.states.values():
                    await state.ready.wait()
            task_status.started()

    async def close(self) -> None:
        for state in self.states.values():
            with anyio.CancelScope(shield=True):
                try:
                    await state.connector.close()
                except Exception:  # closing must never mask the shutdown reason
                    log.exception("closing %s failed", state.config.name)

    async def _keep(self, state: DatabaseState) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                if not state.opened:
                    await state.connector.open()
                    state.opened = True
                await self._discover(state)
                delay = RETRY_FIRST_S
                state.ready.set()
                with anyio.move_on_after(self.ttl):
                    await state.refresh_now.wait()
                state.refresh_now = anyio.Event()
            except (ConnectorError, SluiceError, OSError) as exc:
                state.reachable = False
                state.error = str(exc)
                state.ready.set()
                log.warning(
                    "database %s unreachable: %s (retry in %.0fs)", state.config.name, exc, delay
                )
                if state.opened:
                    # a pool that failed discovery is kept; only reopen if open() never worked
                    pass
                with anyio.move_on_after(delay):
                    await state.refresh_now.wait()
                state.refresh_now = anyio.Event()
                delay = min(delay * 2, RETRY_MAX_S)

    async def _discover(self, state: DatabaseState) -> None:
        tables = await state.connector.discover()
        state.tables = tables
        state.by_name = {t.name: t for t in tables}
        for t in tables:
            state.by_name.setdefault(t.name.lower(), t)
        state.discovered_at = time.monotonic()
        state.reachable = True
        state.error = None

    async def find_table(self, state: DatabaseState, table: str) -> TableInfo | None:
        """The discovered table, rediscovering once (rate-limited) when it is missing."""
        found = state.table(table)
        if found is not None or not state.reachable:
            return found
        if time.monotonic() - state.discovered_at >= MISS_REFRESH_MIN_S:
            try:
                await self._discover(state)
            except (ConnectorError, SluiceError) as exc:
                log.warning("rediscovery of %s failed: %s", state.config.name, exc)
            found = state.table(table)
        return found

    def page(self, page: int, size: int) -> tuple[list[DatabaseState], int, int]:
        states = list(self.states.values())
        total = len(states)
        pages = max(1, math.ceil(total / size))
        start = (page - 1) * size
        return states[start : start + size], total, pages
