"""The three vector backends with the same points, each next to an oracle: its own client.

- pgvector: PostgreSQL 16 + pgvector from PyPI `pgserver`, started once per session on a
  unix socket in a temporary folder (a start failure is a test error, never a skip).
- Qdrant: the client's embedded local mode in a folder (the connector opens the folder; the
  oracle is a second, in-memory client loaded with the same points).
- LanceDB: a folder of Lance tables (the oracle opens the same folder).

`points` is the shared data set: DIM-dimensional vectors with payload fields of several types,
some of them null, names holding quotes. `brute_force` is numpy's exact answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pytest

from connectors import registry
from connectors.base import Batch, Connector, LinkFilter, Statement
from connectors.config import DatabaseConfig

DIM = 16
N_POINTS = 300
CATEGORIES = ["boots", "jackets", "tents", "stoves"]
TABLE = "items"
FIELDS = ["category", "price", "stock", "name", "color"]


def make_points() -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N_POINTS, DIM)).astype(np.float32)
    out = []
    for i in range(N_POINTS):
        out.append(
            {
                "id": i + 1,
                "vector": [float(x) for x in vectors[i]],
                "payload": {
                    "category": CATEGORIES[i % 4],
                    "price": round(float(rng.uniform(5, 500)), 2),
                    "stock": int(rng.integers(0, 50)),
                    "name": f'item {i} O\'Neil "x"',
                    "color": None if i % 5 == 0 else ["red", "blue", "green"][i % 3],
                },
            }
        )
    return out


POINTS = make_points()
MATRIX = np.array([p["vector"] for p in POINTS], dtype=np.float32)
IDS = np.array([p["id"] for p in POINTS])


def matches(payload: dict[str, Any], pid: int, f: dict[str, Any] | None) -> bool:
    """The filter semantics the language documents, evaluated in Python (the oracle)."""
    if not f:
        return True
    for key, spec in f.items():
        if key == "$and":
            ok = all(matches(payload, pid, s) for s in spec)
        elif key == "$or":
            ok = any(matches(payload, pid, s) for s in spec)
        elif key == "$not":
            ok = not matches(payload, pid, spec)
        else:
            value = pid if key == "id" else payload.get(key)
            conds = spec if isinstance(spec, dict) else {"$eq": spec}
            ok = True
            for op, arg in conds.items():
                if op == "$eq":
                    ok &= value is None if arg is None else value == arg
                elif op == "$ne":
                    ok &= value is not None if arg is None else value != arg
                elif op == "$in":
                    ok &= value in arg
                elif op == "$nin":
                    ok &= value not in arg
                elif value is None:
                    ok = False
                else:
                    ok &= {
                        "$gt": value > arg,
                        "$gte": value >= arg,
                        "$lt": value < arg,
                        "$lte": value <= arg,
                    }[op]
        if not ok:
            return False
    return True


def brute_force(
    query: list[float], k: int, metric: str = "cosine", flt: dict[str, Any] | None = None
) -> list[tuple[int, float]]:
    """Exact top-k (id, score) in numpy: cosine similarity, inner product or L2 distance."""
    q = np.asarray(query, dtype=np.float64)
    m = MATRIX.astype(np.float64)
    keep = np.array([matches(p["payload"], p["id"], flt) for p in POINTS])
    if metric == "cosine":
        scores = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
        order = np.argsort(-scores)
    elif metric == "dot":
        scores = m @ q
        order = np.argsort(-scores)
    else:
        scores = np.linalg.norm(m - q, axis=1)
        order = np.argsort(scores)
    order = [i for i in order if keep[i]][:k]
    return [(int(IDS[i]), float(scores[i])) for i in order]


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[str]:
    """PostgreSQL + pgvector (pgserver) on a unix socket; yields the socket folder."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (as under CI) when pgserver loads
        warnings.simplefilter("ignore")
        import pgserver

    folder = tempfile.mkdtemp(prefix="sluice-pgvector-")
    server = pgserver.get_server(folder, cleanup_mode="delete")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        yield folder
    finally:
        server.cleanup()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _pg(folder: str, *sql: str, args: list[tuple[Any, ...]] | None = None) -> Any:
    import asyncpg

    conn = await asyncpg.connect(host=folder, user="postgres", database="postgres")
    try:
        out = None
        for s in sql:
            out = await conn.fetch(s)
        if args is not None:
            await conn.executemany(sql[-1], args)
        return out
    finally:
        await conn.close()


def load_pgvector(folder: str, table: str = TABLE, metric_ops: str | None = None) -> None:
    index = f"CREATE INDEX ON {table} USING hnsw (embedding {metric_ops});" if metric_ops else ""
    rows = [
        (
            p["id"],
            "[" + ",".join(map(str, p["vector"])) + "]",
            *[p["payload"][f] for f in FIELDS],
        )
        for p in POINTS
    ]

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(host=folder, user="postgres", database="postgres")
        try:
            await conn.execute(f"""
                DROP TABLE IF EXISTS {table};
                CREATE TABLE {table} (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL,
                    category text, price float8, stock integer, name text, color text);
                {index}
            """)
            await conn.executemany(
                f"INSERT INTO {table} VALUES ($1, $2::text::vector, $3, $4, $5, $6, $7)", rows
            )
            await conn.execute(f"ANALYZE {table}")
        finally:
            await conn.close()

    run(go())


def load_qdrant(path: str, distance: str = "Cosine") -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=path)
    try:
        qdrant_points(client, distance)
    finally:
        client.close()


def qdrant_points(client: Any, distance: str = "Cosine") -> None:
    from qdrant_client import models

    if client.collection_exists(TABLE):
        client.delete_collection(TABLE)
    client.create_collection(
        TABLE, vectors_config=models.VectorParams(size=DIM, distance=models.Distance(distance))
    )
    client.upsert(
        TABLE,
        points=[
            models.PointStruct(id=p["id"], vector=p["vector"], payload=p["payload"]) for p in POINTS
        ],
    )


def lance_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([p["id"] for p in POINTS], pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(MATRIX.ravel(), pa.float32()), DIM
            ),
            "category": [p["payload"]["category"] for p in POINTS],
            "price": pa.array([p["payload"]["price"] for p in POINTS], pa.float64()),
            "stock": pa.array([p["payload"]["stock"] for p in POINTS], pa.int32()),
            "name": [p["payload"]["name"] for p in POINTS],
            "color": pa.array([p["payload"]["color"] for p in POINTS], pa.string()),
        }
    )


def load_lancedb(folder: str) -> None:
    import lancedb

    db = lancedb.connect(folder)
    db.create_table(TABLE, lance_table(), mode="overwrite")


# -- one fixture over the three backends -----------------------------------------------------


@dataclass
class Backend:
    kind: str
    connector: Connector
    reload: Callable[[], None]
    # reads the current points back with the backend's own client: {id: payload}
    read_back: Callable[[], dict[Any, dict[str, Any]]]
    extra: dict[str, Any] = field(default_factory=dict)

    async def snapshot(self) -> dict[Any, dict[str, Any]]:
        return await anyio.to_thread.run_sync(self.read_back)

    async def reset(self) -> None:
        await anyio.to_thread.run_sync(self.reload)

    async def rows(self, body: dict[str, Any] | str, **kw: Any) -> list[dict[str, Any]]:
        text = body if isinstance(body, str) else json.dumps(body)
        link = kw.pop("link", None)
        statement = Statement(text, options={"collection": kw.pop("table", TABLE)}, **kw)
        if link is not None:
            statement = self.connector.with_link(statement, link)
        out: list[dict[str, Any]] = []
        async for batch in self.connector.stream(statement):
            out.extend(batch_dicts(batch))
        return out

    async def write(self, body: dict[str, Any], table: str = TABLE) -> int:
        statement = Statement(json.dumps(body), readonly=False, options={"collection": table})
        return await self.connector.execute_write(statement)


def batch_dicts(batch: Batch) -> list[dict[str, Any]]:
    names = [c.name for c in batch.columns]
    if batch.arrow is not None:
        return batch.arrow.to_pylist()
    return [dict(zip(names, r, strict=True)) for r in batch.rows or []]


def config(kind: str, **kw: Any) -> DatabaseConfig:
    return registry.database_config(name=f"vec_{kind}", type=kind, **kw)


def _pg_snapshot(folder: str) -> dict[Any, dict[str, Any]]:
    rows = run(_pg(folder, f"SELECT id, {', '.join(FIELDS)} FROM {TABLE}"))
    return {r["id"]: {f: r[f] for f in FIELDS} for r in rows}


def _qdrant_snapshot(connector: Any) -> dict[Any, dict[str, Any]]:
    client = connector._client
    points, _ = client.scroll(TABLE, limit=10_000, with_payload=True)
    return {p.id: {f: (p.payload or {}).get(f) for f in FIELDS} for p in points}


def _lance_snapshot(folder: str) -> dict[Any, dict[str, Any]]:
    import lancedb

    rows = lancedb.connect(folder).open_table(TABLE).to_arrow().to_pylist()
    return {r["id"]: {f: r[f] for f in FIELDS} for r in rows}


@pytest.fixture(params=["pgvector", "qdrant", "lancedb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "pgvector":
        folder = request.getfixturevalue("pgvector_server")
        load = lambda: load_pgvector(folder)  # noqa: E731
        connector = registry.create(
            config(kind, host=folder, user="postgres", database="postgres", pool_size=4)
        )
        reload = lambda: load_pgvector(folder)  # noqa: E731
        snapshot = lambda: _pg_snapshot(folder)  # noqa: E731
    elif kind == "qdrant":
        connector = registry.create(config(kind, path=":memory:"))

        def reload() -> None:
            qdrant_points(connector._client)  # type: ignore[attr-defined]

        load = None

        snapshot = lambda: _qdrant_snapshot(connector)  # noqa: E731
    else:
        folder = str(tmp_path / "lance")

        def load() -> None:
            Path(folder).mkdir()
            load_lancedb(folder)

        connector = registry.create(config(kind, path=folder))
        reload = lambda: load_lancedb(folder)  # noqa: E731
        snapshot = lambda: _lance_snapshot(folder)  # noqa: E731
    if load is not None:
        await anyio.to_thread.run_sync(load)
    await connector.open()
    if load is None:
        await anyio.to_thread.run_sync(reload)
    try:
        yield Backend(kind, connector, reload, snapshot, {"tmp": tmp_path})
    finally:
        await connector.close()


def close(a: float, b: float, tol: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def link(column: str, values: list[Any], typ: str = "BIGINT") -> LinkFilter:
    return LinkFilter(column, values, typ)
