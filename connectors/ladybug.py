"""ladybug graph files (an embedded property-graph database, a maintained fork of Kùzu): the
graph counterpart of a DuckDB file. `type: ladybug` with `path` in sluice.yaml.

Reads run on a database handle opened read-only, so a write the Cypher analysis missed is
refused by ladybug itself; a write that passed with a grant opens a read-write handle for that
statement only (and the read handle is reopened after it, so reads see the write). Calls run in
worker threads; a timeout or a cancelled caller interrupts the query (`Connection.interrupt`,
and ladybug's own query timeout). ladybug checks for an interrupt between the morsels of a scan
or join: those stop within milliseconds, but an UNWIND over a huge generated list is one morsel
and runs to its end, and the caller waits for it (the connection is never reused while busy).
Column types come from ladybug's own result types, so every batch of a result has the same.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import ladybug

from connectors.arrow_rows import rows_to_arrow
from connectors.base import (
    Batch,
    Column,
    FieldInfo,
    LinkFilter,
    PoolStats,
    Statement,
    TableInfo,
)
from connectors.config import DatabaseConfig, FileSettings
from connectors.cypher_link import link_params, linked
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.graph_rows import sampled_distribution
from connectors.threads import call_interruptible
from connectors.types_map import json_safe, unique_names

SAMPLE_ROWS = 200
_TYPES = {
    "BOOL": "BOOLEAN",
    "INT8": "SMALLINT",
    "INT16": "SMALLINT",
    "INT32": "INTEGER",
    "INT64": "BIGINT",
    "SERIAL": "BIGINT",
    "UINT8": "SMALLINT",
    "UINT16": "INTEGER",
    "UINT32": "BIGINT",
    "INT128": "HUGEINT",
    "FLOAT": "REAL",
    "DOUBLE": "DOUBLE",
    "STRING": "VARCHAR",
    "BLOB": "BLOB",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "INTERVAL": "INTERVAL",
    "UUID": "UUID",
}


class LadybugSettings(FileSettings, tag="ladybug", frozen=True):
    """Where this connector connects (`type: ladybug` in sluice.yaml)."""


def column_type(native: str) -> str:
    """A ladybug result type as a DuckDB type name; entities, lists and maps are JSON."""
    base = native.split("(", 1)[0].upper()
    if base.startswith("DECIMAL"):
        return native.upper()
    return _TYPES.get(base, "JSON")


def shape(value: Any) -> Any:
    """A ladybug value as a row value: nodes, relationships and paths as JSON-ready dicts."""
    if isinstance(value, dict):
        if "_NODES" in value and "_RELS" in value:
            return {
                "nodes": [shape(n) for n in value["_NODES"]],
                "relationships": [shape(r) for r in value["_RELS"]],
            }
        if "_SRC" in value and "_DST" in value:
            return {
                "id": _id(value.get("_ID")),
                "type": value.get("_LABEL"),
                "src": _id(value["_SRC"]),
                "dst": _id(value["_DST"]),
                "properties": _props(value),
            }
        if "_ID" in value and "_LABEL" in value:
            return {
                "id": _id(value["_ID"]),
                "labels": [value["_LABEL"]],
                "properties": _props(value),
            }
        return {str(k): shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def _run(conn: ladybug.Connection, text: str, params: dict[str, Any] | None = None) -> Any:
    """One statement's result (ladybug returns a list for several statements; ours is one)."""
    result = conn.execute(text, params or {})
    return result[0] if isinstance(result, list) else result


def _id(internal: Any) -> str | None:
    if isinstance(internal, dict):
        return f"{internal.get('table')}:{internal.get('offset')}"
    return None if internal is None else str(internal)


def _props(value: dict[str, Any]) -> dict[str, Any]:
    return {k: json_safe(v) for k, v in value.items() if not k.startswith("_")}


class LadybugConnector:
    """One ladybug graph file, queried from worker threads."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (LadybugSettings,)
    language: ClassVar[str] = "cypher"
    dialect: ClassVar[str] = "ladybug"

    def __init__(self, config: LadybugSettings) -> None:
        self.config = config
        self._db: ladybug.Database | None = None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(config.pool_size)

    def _path(self) -> str:
        path = self.config.path or ""
        if not path or not Path(path).exists():
            raise ConnectorUnavailable(self.config.name, f"no graph file at {path!r}")
        return path

    async def open(self) -> None:
        if self._db is not None:
            return
        path = self._path()
        try:
            self._db = await anyio.to_thread.run_sync(
                lambda: ladybug.Database(path, read_only=True)
            )
        except RuntimeError as exc:
            raise ConnectorUnavailable(self.config.name, f"cannot open {path}: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(RuntimeError):
                await anyio.to_thread.run_sync(db.close)

    async def ping(self) -> None:
        await self._call(Statement("RETURN 1", timeout=5.0), lambda c: _run(c, "RETURN 1"))

    async def _call(self, statement: Statement, fn: Any, *, write: bool = False) -> Any:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        db_name = self.config.name
        async with self._limiter:
            if write:
                handle = await anyio.to_thread.run_sync(lambda: ladybug.Database(self._path()))
            else:
                handle = self._db
            conn = ladybug.Connection(handle)
            conn.set_query_timeout(max(1, int(statement.timeout * 1000)))
            try:
                with anyio.fail_after(statement.timeout + 1.0):
                    return await call_interruptible(lambda: fn(conn), conn.interrupt)
            except TimeoutError as exc:
                raise QueryTimedOut(db_name, statement.timeout) from exc
            except RuntimeError as exc:
                if "Interrupted" in str(exc):
                    raise QueryTimedOut(db_name, statement.timeout) from exc
                raise QueryFailed(db_name, _message(exc)) from exc
            finally:
                with contextlib.suppress(RuntimeError):
                    conn.close()
                if write:
                    with contextlib.suppress(RuntimeError):
                        await anyio.to_thread.run_sync(handle.close)
                    # reads see the write: reopen the read-only handle
                    old, self._db = self._db, None
                    if old is not None:
                        with contextlib.suppress(RuntimeError):
                            await anyio.to_thread.run_sync(old.close)
                    await self.open()

    @staticmethod
    def _params(statement: Statement) -> dict[str, Any]:
        return link_params(statement)

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        params = self._params(statement)
        limit = statement.max_rows

        def run(conn: ladybug.Connection) -> tuple[list[Column], list[tuple[Any, ...]]]:
            result = _run(conn, statement.text, params)
            names = unique_names(result.get_column_names())
            types = [column_type(t) for t in result.get_column_data_types()]
            rows: list[tuple[Any, ...]] = []
            while result.has_next() and (limit is None or len(rows) < limit):
                rows.append(tuple(shape(v) for v in result.get_next()))
            result.close()
            return [Column(n, t) for n, t in zip(names, types, strict=True)], rows

        columns, rows = await self._call(statement, run, write=not statement.readonly)
        size = statement.batch_size
        for lo in range(0, max(len(rows), 1), size):
            chunk = rows[lo : lo + size]
            if statement.bulk:
                yield Batch(columns, arrow=rows_to_arrow(columns, chunk))
            else:
                yield Batch(columns, rows=chunk)

    async def execute_write(self, statement: Statement) -> int:
        params = self._params(statement)

        def run(conn: ladybug.Connection) -> int:
            result = _run(conn, statement.text, params)
            count = 0
            while result.has_next():
                result.get_next()
                count += 1
            result.close()
            return count

        # ladybug reports no per-statement change count; a write that RETURNs counts its rows
        return int(await self._call(statement, run, write=True))

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return linked(statement, link, self.config.name)

    def pool_stats(self) -> PoolStats | None:
        return None

    async def discover(self) -> list[TableInfo]:
        def run(conn: ladybug.Connection) -> list[TableInfo]:
            tables = _run(conn, "CALL show_tables() RETURN name, type").get_all()
            out = []
            for name, kind in tables:
                if kind not in ("NODE", "REL"):
                    continue
                info = _run(conn, f"CALL table_info('{name}') RETURN *").get_all()
                q = "`" + name.replace("`", "``") + "`"
                pattern = f"(n:{q})" if kind == "NODE" else f"()-[n:{q}]->()"
                count = _run(conn, f"MATCH {pattern} RETURN count(n)").get_all()[0][0]
                fields = []
                for row in info:
                    prop, native, primary = row[1], row[2], row[-1] is True
                    pq = "`" + str(prop).replace("`", "``") + "`"
                    sample = _run(
                        conn, f"MATCH {pattern} RETURN n.{pq} LIMIT {SAMPLE_ROWS}"
                    ).get_all()
                    fields.append(
                        FieldInfo(
                            name=str(prop),
                            data_type=column_type(str(native)),
                            is_primary=primary,
                            nullable=not primary,
                            distribution=sampled_distribution([r[0] for r in sample]),
                        )
                    )
                out.append(
                    TableInfo(
                        name=name,
                        fields=fields,
                        row_count_estimate=int(count),
                        description="node label" if kind == "NODE" else "relationship type",
                    )
                )
            return out

        return list(await self._call(Statement("discover", timeout=60.0), run))


def _message(exc: Exception) -> str:
    text = str(exc)
    for prefix in ("Binder exception: ", "Parser exception: ", "Runtime exception: "):
        text = text.replace(prefix, "")
    return text
