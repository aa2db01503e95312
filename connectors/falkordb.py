"""FalkorDB (a property-graph server over the Redis protocol) through its async client.

`type: falkordb` in sluice.yaml: `host`/`port` (or a `dsn` `redis://user:pass@host:port`),
`graph` (the graph key; defaults to the database name), `user`/`password`, `pool_size`,
timeouts. The language is Cypher (safety/languages/cypher.py).

Reads run with `GRAPH.RO_QUERY`, so the server itself refuses a write that the analysis
missed; writes (a statement that passed with a write grant) run with `GRAPH.QUERY`. Every
query carries the server's own `timeout` (milliseconds). FalkorDB answers with the whole
result at once, so the row cap is in the text (GUARDRAILS' LIMIT), and the connector
splits the reply into bounded batches.

Links: the checked text already holds `... IN $sluice_link` (safety's link rewrite); the
connector binds the batch of link values as that list parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import anyio
from falkordb import Edge, Node, Path
from falkordb.asyncio import FalkorDB
from redis import exceptions as redis_errors

from connectors import graph_rows
from connectors.base import (
    Batch,
    FieldInfo,
    LinkFilter,
    PoolStats,
    Statement,
    TableInfo,
)
from connectors.config import DatabaseConfig, ServerSettings
from connectors.cypher_link import link_params, linked
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.types_map import json_safe

SAMPLE_NODES = 200
# write statistics FalkorDB reports, summed into the statement's rows_affected
_WRITE_STATS = (
    "nodes_created",
    "nodes_deleted",
    "relationships_created",
    "relationships_deleted",
    "labels_added",
    "labels_removed",
)


class FalkorDBSettings(ServerSettings, tag="falkordb", frozen=True):
    """Where this connector connects (`type: falkordb` in sluice.yaml)."""

    graph: str | None = None

    @property
    def display_database(self) -> str:
        return self.graph or self.database or self.name


def shape(value: Any) -> Any:
    """A FalkorDB value as a row value: entities as JSON-ready dicts, the rest as is."""
    if isinstance(value, Node):
        return {
            "id": value.id,
            "labels": list(value.labels or []),
            "properties": json_safe(value.properties),
        }
    if isinstance(value, Edge):
        return {
            "id": value.id,
            "type": value.relation,
            "src": value.src_node,
            "dst": value.dest_node,
            "properties": json_safe(value.properties),
        }
    if isinstance(value, Path):
        return {
            "nodes": [shape(n) for n in value.nodes()],
            "relationships": [shape(e) for e in value.edges()],
        }
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, dict):
        return {str(k): shape(v) for k, v in value.items()}
    return value


class FalkorDBConnector:
    """One FalkorDB graph behind a pooled async Redis client."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (FalkorDBSettings,)
    language: ClassVar[str] = "cypher"
    dialect: ClassVar[str] = "falkordb"

    def __init__(self, config: FalkorDBSettings) -> None:
        self.config = config
        self._db: FalkorDB | None = None

    @property
    def graph_name(self) -> str:
        return self.config.graph or self.config.database or self.config.name

    async def open(self) -> None:
        if self._db is not None:
            return
        c = self.config
        host, port, user, password = c.host or "127.0.0.1", c.port or 6379, c.user, c.password
        if c.dsn:
            parts = urlsplit(c.dsn)
            host, port = parts.hostname or host, parts.port or port
            user = unquote(parts.username) if parts.username else user
            password = unquote(parts.password) if parts.password else password
        self._db = FalkorDB(
            host=host,
            port=port,
            username=user,
            password=password,
            socket_connect_timeout=c.connect_timeout_seconds,
            max_connections=c.pool_size,
        )
        try:
            await self.ping()
        except ConnectorUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                await db.connection.aclose()

    def _graph(self) -> Any:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._db.select_graph(self.graph_name)

    async def ping(self) -> None:
        if self._db is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        try:
            with anyio.fail_after(self.config.connect_timeout_seconds):
                await self._db.connection.ping()
        except (TimeoutError, OSError, redis_errors.RedisError) as exc:
            raise ConnectorUnavailable(self.config.name, f"cannot reach FalkorDB: {exc}") from exc

    async def _run(self, statement: Statement, *, write: bool) -> Any:
        graph = self._graph()
        ms = max(1, int(statement.timeout * 1000))
        params = link_params(statement)
        db = self.config.name
        try:
            # the client-side deadline trails the server's own timeout, which stops first
            with anyio.fail_after(statement.timeout + 1.0):
                if write:
                    return await graph.query(statement.text, params or None, timeout=ms)
                return await graph.ro_query(statement.text, params or None, timeout=ms)
        except TimeoutError as exc:
            raise QueryTimedOut(db, statement.timeout) from exc
        except redis_errors.ConnectionError as exc:
            raise ConnectorUnavailable(db, str(exc)) from exc
        except redis_errors.ResponseError as exc:
            message = str(exc)
            if "timed out" in message.lower():
                raise QueryTimedOut(db, statement.timeout) from exc
            raise QueryFailed(db, message) from exc
        except redis_errors.RedisError as exc:
            raise QueryFailed(db, str(exc)) from exc

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        result = await self._run(statement, write=not statement.readonly)
        names = [h[1] if isinstance(h, list | tuple) else str(h) for h in result.header or []]
        rows = result.result_set or []
        if statement.max_rows is not None:
            rows = rows[: statement.max_rows]

        def build() -> list[Batch]:
            shaped = [tuple(shape(v) for v in row) for row in rows]
            return graph_rows.batches(
                names, shaped, batch_size=statement.batch_size, bulk=statement.bulk
            )

        for batch in await anyio.to_thread.run_sync(build):
            yield batch

    async def execute_write(self, statement: Statement) -> int:
        result = await self._run(statement, write=True)
        changed = sum(int(getattr(result, name, 0) or 0) for name in _WRITE_STATS)
        # a replaced value is reported as one property set and one removed: count it once
        props = max(int(result.properties_set or 0), int(result.properties_removed or 0))
        return changed + props

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return linked(statement, link, self.config.name)

    def pool_stats(self) -> PoolStats | None:
        if self._db is None:
            return None
        pool = self._db.connection.connection_pool
        in_use = len(getattr(pool, "_in_use_connections", ()))
        return PoolStats(in_use=in_use, size=self.config.pool_size)

    async def discover(self) -> list[TableInfo]:
        """Labels and relationship types as tables; property types from a sample of each."""
        graph = self._graph()
        db = self.config.name
        try:
            labels = [r[0] for r in (await graph.ro_query("CALL db.labels()")).result_set]
            types = [r[0] for r in (await graph.ro_query("CALL db.relationshipTypes()")).result_set]
            out: list[TableInfo] = []
            for kind, names in (("node", labels), ("relationship", types)):
                for name in names:
                    pattern = (
                        f"(n:{_quote(name)})" if kind == "node" else f"()-[n:{_quote(name)}]->()"
                    )
                    count = (await graph.ro_query(f"MATCH {pattern} RETURN count(n)")).result_set[
                        0
                    ][0]
                    sample = (
                        await graph.ro_query(
                            f"MATCH {pattern} RETURN properties(n) LIMIT {SAMPLE_NODES}"
                        )
                    ).result_set
                    out.append(
                        TableInfo(
                            name=name,
                            fields=_fields([r[0] for r in sample]),
                            row_count_estimate=int(count),
                            description=f"{kind} {'label' if kind == 'node' else 'type'}",
                        )
                    )
            return out
        except redis_errors.ConnectionError as exc:
            raise ConnectorUnavailable(db, str(exc)) from exc
        except redis_errors.RedisError as exc:
            raise QueryFailed(db, str(exc)) from exc


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _fields(samples: list[dict[str, Any]]) -> list[FieldInfo]:
    """Union of the sampled properties, each typed by the values seen (as the rows are)."""
    keys: dict[str, None] = {}
    for props in samples:
        keys.update(dict.fromkeys(props))
    rows = [tuple(p.get(k) for k in keys) for p in samples]
    types = graph_rows.column_types(rows, len(keys))
    fields = []
    for i, (key, typ) in enumerate(zip(keys, types, strict=True)):
        values = [r[i] for r in rows]
        fields.append(
            FieldInfo(
                name=key,
                data_type=typ,
                nullable=any(v is None for v in values),
                distribution=graph_rows.sampled_distribution(values),
            )
        )
    return fields
