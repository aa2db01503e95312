"""Each vector backend against numpy's exact answer and its own client: search, filters,
fetch, scroll, count, writes, links and the refusals that must leave data unchanged."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from connectors.errors import QueryFailed
from connectors.vector_query import InvalidVectorQuery, parse
from tests.vector.conftest import (
    DIM,
    MATRIX,
    POINTS,
    TABLE,
    Backend,
    brute_force,
    close,
    link,
    matches,
)

FILTERS = [
    None,
    {"category": "boots"},
    {"price": {"$gte": 100, "$lt": 300}},
    {"category": {"$in": ["tents", "stoves"]}, "stock": {"$gt": 10}},
    {"$or": [{"category": "boots"}, {"price": {"$lt": 50}}]},
    {"$not": {"category": "jackets"}},
    {"color": None},
    {"color": {"$ne": "red"}},
    {"category": {"$nin": ["boots", "tents"]}},
    {"name": 'item 3 O\'Neil "x"'},
    {"id": {"$in": [1, 2, 3, 50, 51]}},
]


def query_vector(seed: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).normal(size=DIM)]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: str(f)[:40])
async def test_search_matches_brute_force(backend: Backend, flt: dict | None) -> None:
    q = query_vector(11)
    body = {"intent": "search", "vector": q, "limit": 7}
    if flt is not None:
        body["filter"] = flt
    rows = await backend.rows(body)
    want = brute_force(q, 7, "cosine", flt)
    assert [r["id"] for r in rows] == [i for i, _ in want]
    for row, (_, score) in zip(rows, want, strict=True):
        assert close(row["score"], score), (row, score)
    for row in rows:
        point = POINTS[row["id"] - 1]["payload"]
        assert {k: row[k] for k in point} == point


async def test_search_matches_the_clients_own_answer(backend: Backend) -> None:
    q = query_vector(5)
    rows = await backend.rows({"intent": "search", "vector": q, "limit": 10})
    if backend.kind == "qdrant":
        from qdrant_client import QdrantClient

        from tests.vector.conftest import qdrant_points

        oracle = QdrantClient(":memory:")
        qdrant_points(oracle)
        own = [(p.id, p.score) for p in oracle.query_points("items", query=q, limit=10).points]
    elif backend.kind == "lancedb":
        import lancedb

        table = lancedb.connect(str(backend.extra["tmp"] / "lance")).open_table("items")
        res = table.search(q).distance_type("cosine").limit(10).to_arrow()
        ids, dists = res["id"].to_pylist(), res["_distance"].to_pylist()
        own = [(i, 1 - d) for i, d in zip(ids, dists, strict=True)]
    else:
        text = "[" + ",".join(map(str, q)) + "]"
        folder = backend.connector.config.host
        got = await _pg_async(folder, text)
        own = [(r["id"], r["s"]) for r in got]
    assert [r["id"] for r in rows] == [i for i, _ in own]
    assert all(close(r["score"], s) for r, (_, s) in zip(rows, own, strict=True))


async def _pg_async(folder: str, text: str) -> list:
    import asyncpg

    conn = await asyncpg.connect(host=folder, user="postgres", database="postgres")
    try:
        return await conn.fetch(
            "SELECT id, 1 - (embedding <=> $1::text::vector) AS s FROM items "
            "ORDER BY embedding <=> $1::text::vector LIMIT 10",
            text,
        )
    finally:
        await conn.close()


async def test_fetch_scroll_count(backend: Backend) -> None:
    rows = await backend.rows({"intent": "fetch", "ids": [3, 1, 999], "with_payload": ["name"]})
    assert sorted(r["id"] for r in rows) == [1, 3]
    assert all(set(r) == {"id", "name"} for r in rows)
    flt = {"category": "tents"}
    want = sorted(p["id"] for p in POINTS if matches(p["payload"], p["id"], flt))
    count = await backend.rows({"intent": "count", "filter": flt})
    assert count == [{"count": len(want)}]
    everything = await backend.rows({"intent": "scroll", "filter": flt, "limit": 1000})
    assert sorted(r["id"] for r in everything) == want
    page1 = await backend.rows({"intent": "scroll", "filter": flt, "limit": 30})
    page2 = await backend.rows({"intent": "scroll", "filter": flt, "limit": 30, "offset": 30})
    ids = [r["id"] for r in page1 + page2]
    assert len(ids) == len(set(ids)) == min(60, len(want))
    capped = await backend.rows({"intent": "scroll", "limit": 1000}, max_rows=11)
    assert len(capped) == 11


async def test_metric_dot_and_l2_scores(backend: Backend, pgvector_server: str) -> None:
    """A collection whose metric is inner product: scores are inner products, exact."""
    q = query_vector(3)
    if backend.kind == "pgvector":
        from tests.vector.conftest import load_pgvector

        await anyio.to_thread.run_sync(load_pgvector, pgvector_server, "items_ip", "vector_ip_ops")
        backend.connector._layouts.clear()  # type: ignore[attr-defined]
        rows = await backend.rows({"intent": "search", "vector": q, "limit": 5}, table="items_ip")
        # hnsw is approximate: compare scores of what came back, and the top hit
        for r in rows:
            assert close(r["score"], float(MATRIX[r["id"] - 1] @ np.array(q)))
        assert rows[0]["id"] == brute_force(q, 1, "dot")[0][0]
        return
    if backend.kind == "qdrant":
        from tests.vector.conftest import qdrant_points

        qdrant_points(backend.connector._client, "Euclid")  # type: ignore[attr-defined]
        rows = await backend.rows({"intent": "search", "vector": q, "limit": 5})
        want = brute_force(q, 5, "l2")
    else:
        import lancedb

        table = lancedb.connect(str(backend.extra["tmp"] / "lance")).open_table("items")
        from lancedb.index import IvfFlat

        table.create_index("vector", config=IvfFlat(distance_type="dot", num_partitions=1))
        rows = await backend.rows({"intent": "search", "vector": q, "limit": 5})
        want = brute_force(q, 5, "dot")
    assert [r["id"] for r in rows] == [i for i, _ in want]
    assert all(close(r["score"], s) for r, (_, s) in zip(rows, want, strict=True))


async def test_links_are_anded_into_the_filter(backend: Backend) -> None:
    q = query_vector(9)
    flt = {"category": "boots"}
    allowed = [1, 5, 9, 13, 2, 3, 200, 201]  # boots are ids 1, 5, 9, ...
    rows = await backend.rows(
        {"intent": "search", "vector": q, "limit": 50, "filter": flt}, link=link("id", allowed)
    )
    want = brute_force(q, 50, "cosine", {"$and": [flt, {"id": {"$in": allowed}}]})
    assert [r["id"] for r in rows] == [i for i, _ in want]
    assert {r["id"] for r in rows} <= set(allowed)
    by_field = await backend.rows(
        {"intent": "scroll", "limit": 1000}, link=link("category", ["tents"], "VARCHAR")
    )
    assert {r["category"] for r in by_field} == {"tents"}
    assert len(by_field) == sum(p["payload"]["category"] == "tents" for p in POINTS)
    nothing = await backend.rows({"intent": "count"}, link=link("id", []))
    assert nothing == [{"count": 0}]


async def test_near_text_and_hybrid_use_the_embedding(backend: Backend) -> None:
    # the collection is 16-dimensional: a 384-dimensional embedding is refused, not run
    with pytest.raises(QueryFailed, match="384 dimensions"):
        await backend.rows({"intent": "near_text", "text": "hiking boots"})


async def test_writes_change_exactly_what_they_say(backend: Backend) -> None:
    before = await backend.snapshot()
    new = [{"id": 1001, "vector": query_vector(1), "payload": {"category": "boots", "stock": 3}}]
    new.append({"id": 2, "vector": query_vector(2), "payload": {"category": "maps"}})
    assert await backend.write({"intent": "upsert", "points": new}) == 2
    after = await backend.snapshot()
    assert after[1001]["category"] == "boots" and after[1001]["stock"] == 3
    assert after[2]["category"] == "maps"
    assert {k: v for k, v in after.items() if k not in (2, 1001)} == {
        k: v for k, v in before.items() if k != 2
    }
    n = await backend.write(
        {"intent": "set_payload", "filter": {"category": "tents"}, "payload": {"stock": 0}}
    )
    tents = [k for k, v in after.items() if v["category"] == "tents"]
    assert n == len(tents)
    now = await backend.snapshot()
    assert all(now[k]["stock"] == 0 for k in tents)
    assert await backend.write({"intent": "delete", "ids": [1001, 3]}) == 2
    assert await backend.write({"intent": "delete", "filter": {"category": "maps"}}) == 1
    left = await backend.snapshot()
    assert 1001 not in left and 3 not in left and 2 not in left
    assert len(left) == len(before) - 2
    assert await backend.write({"intent": "delete_all"}) == len(left)
    assert await backend.snapshot() == {}


async def test_refusals_leave_the_data_unchanged(backend: Backend) -> None:
    before = await backend.snapshot()
    wrong = {"intent": "upsert", "points": [{"id": 7, "vector": [0.1] * (DIM + 1)}]}
    with pytest.raises(QueryFailed, match="dimensions"):
        await backend.write(wrong)
    with pytest.raises(QueryFailed, match="dimensions"):
        await backend.rows({"intent": "search", "vector": [0.5] * (DIM - 1)})
    # a value that looks like SQL is a value: it matches nothing and changes nothing
    hostile = "x' OR '1'='1"
    assert await backend.rows({"intent": "count", "filter": {"category": hostile}}) == [
        {"count": 0}
    ]
    assert await backend.write({"intent": "delete", "filter": {"name": hostile}}) == 0
    unknown = {"intent": "count", "filter": {"no_such_field": 1}}
    if backend.kind == "qdrant":  # payloads have no schema: an unknown field matches nothing
        assert await backend.rows(unknown) == [{"count": 0}]
    else:
        with pytest.raises(QueryFailed, match="no_such_field"):
            await backend.rows(unknown)
    with pytest.raises(QueryFailed, match="read-only"):
        await backend.rows({"intent": "delete_all"})
    assert await backend.snapshot() == before


async def test_new_payload_fields(backend: Backend) -> None:
    """Qdrant's payloads have no schema: a new field is stored. LanceDB and pgvector tables
    have one: the upsert is refused naming every new field, and nothing is written."""
    point = {"id": 4242, "vector": query_vector(3), "payload": {"category": "x", "zz": 1, "aa": 2}}
    body = {"intent": "upsert", "points": [point]}
    if backend.kind == "qdrant":
        assert await backend.write(body) == 1
        got = backend.connector._client.retrieve(TABLE, [4242])  # type: ignore[attr-defined]
        assert got[0].payload == point["payload"]
        return
    before = await backend.snapshot()
    with pytest.raises(QueryFailed, match="aa, zz"):
        await backend.write(body)
    assert await backend.snapshot() == before


def test_bodies_are_bounded() -> None:
    deep: dict = {"category": "x"}
    for _ in range(10):
        deep = {"$not": deep}
    with pytest.raises(InvalidVectorQuery, match="deeper"):
        parse(f'{{"intent": "count", "filter": {_json(deep)}}}')
    wide = {"$or": [{"stock": i} for i in range(300)]}
    with pytest.raises(InvalidVectorQuery, match="conditions"):
        parse(f'{{"intent": "count", "filter": {_json(wide)}}}')
    with pytest.raises(InvalidVectorQuery, match="ef"):
        parse('{"intent": "search", "vector": [1], "ef": 100000}')
    with pytest.raises(InvalidVectorQuery, match="out of range"):
        parse('{"intent": "search", "vector": [1e999]}')
    with pytest.raises(InvalidVectorQuery, match="unknown key"):
        parse('{"intent": "search", "vector": [1], "query": "DROP TABLE items"}')
    with pytest.raises(InvalidVectorQuery, match="field name"):
        parse('{"intent": "count", "filter": {"a` OR 1=1 --": 1}}')
    with pytest.raises(InvalidVectorQuery, match="ids"):
        parse('{"intent": "delete"}')
    assert parse('{"intent": "delete", "filter": {}}').deletes_everything
    assert not parse('{"intent": "delete", "filter": {"a": 1}}').deletes_everything


def _json(obj: object) -> str:
    import json

    return json.dumps(obj)


async def test_create_search_and_drop_a_collection(backend: Backend) -> None:
    """Collection changes (the A level's intents): created with its dimension and metric, the
    metric is discovered back, and a dropped collection is gone."""
    await backend.write({"intent": "create_collection", "dimension": 4, "metric": "dot"}, "fresh")
    points = [
        {"id": 1, "vector": [1.0, 0.0, 0.0, 0.0]},
        {"id": 2, "vector": [0.5, 0.5, 0.0, 0.0]},
        {"id": 3, "vector": [0.0, 0.0, 3.0, 0.0]},
    ]
    assert await backend.write({"intent": "upsert", "points": points}, "fresh") == 3
    rows = await backend.rows(
        {"intent": "search", "vector": [1.0, 0.0, 1.0, 0.0], "limit": 3}, table="fresh"
    )
    assert [r["id"] for r in rows] == [3, 1, 2]
    # dot: the inner products, not cosines (which would rank 1 first)
    assert [round(r["score"], 4) for r in rows] == [3.0, 1.0, 0.5]
    tables = {t.name: t for t in await backend.connector.discover()}
    assert "dot" in tables["fresh"].description
    with pytest.raises(QueryFailed):  # created once only
        await backend.write({"intent": "create_collection", "dimension": 4}, "fresh")
    await backend.write({"intent": "drop_collection"}, "fresh")
    assert "fresh" not in {t.name for t in await backend.connector.discover()}


async def test_pgvector_search_effort_stays_with_its_search(pgvector_server: str) -> None:
    """ef/probes are session settings sent only when they change (one round trip per search),
    so a search that leaves them out, and a later caller, must see the defaults again: one
    connection in the pool, read after each search with SHOW."""
    from connectors import registry
    from tests.vector.conftest import config, load_pgvector

    await anyio.to_thread.run_sync(load_pgvector, pgvector_server)
    connector = registry.create(
        config("pgvector", host=pgvector_server, user="postgres", database="postgres", pool_size=1)
    )
    await connector.open()
    backend = Backend("pgvector", connector, lambda: None, lambda: {})
    pool = connector._require_pool()  # type: ignore[attr-defined]

    async def show() -> tuple[str, str, str]:
        async with pool.acquire() as conn:  # the one connection, before the pool resets it
            return (
                await conn.fetchval("SHOW ivfflat.probes"),
                await conn.fetchval("SHOW hnsw.ef_search"),
                await conn.fetchval("SHOW statement_timeout"),
            )

    try:
        q = query_vector(3)
        want = [i for i, _ in brute_force(q, 5, "cosine", None)]
        base = {"intent": "search", "vector": q, "limit": 5}
        await backend.rows(base)  # loads pgvector's library: its settings exist from then on
        defaults = await show()
        assert defaults[:2] == ("1", "40")  # pgvector's own defaults
        for _ in range(2):  # the second time, the connection already has them
            rows = await backend.rows({**base, "probes": 3, "ef": 50})
            assert [r["id"] for r in rows] == want
        assert (await show())[:2] == ("3", "50")
        await backend.rows({**base, "probes": 3, "ef": 50})
        rows = await backend.rows(base)  # the same connection, still with probes 3 before it
        assert [r["id"] for r in rows] == want
        assert await show() == defaults
        await backend.rows({**base, "probes": 2}, timeout=7)
        assert await show() == defaults  # a non-default timeout: the pool reset it all
    finally:
        await connector.close()


@pytest.mark.parametrize("backend", ["qdrant"], indirect=True)
async def test_qdrant_local_reads_run_side_by_side_and_writes_alone(backend: Backend) -> None:
    """Local mode: two searches meet inside the store at once (a barrier both must reach),
    and no write ever runs while a read or another write is inside it."""
    client = backend.connector._client  # type: ignore[attr-defined]
    inside = {"reads": 0, "writes": 0}
    overlaps: list[str] = []
    guard = threading.Lock()
    met = threading.Barrier(2, timeout=10)

    def instrumented(name: str, write: bool):  # type: ignore[no-untyped-def]
        real = getattr(client, name)

        def call(**kwargs):  # type: ignore[no-untyped-def]
            with guard:
                if inside["writes"] or (write and inside["reads"]):
                    overlaps.append(name)
                inside["writes" if write else "reads"] += 1
            try:
                if name == "query_points" and not met.broken:
                    met.wait()  # returns only once a second search is inside too
                return real(**kwargs)
            finally:
                with guard:
                    inside["writes" if write else "reads"] -= 1

        return call

    client.query_points = instrumented("query_points", write=False)
    client.count = instrumented("count", write=False)
    client.upsert = instrumented("upsert", write=True)
    count = {"intent": "count"}
    [before] = await backend.rows(count)

    async def search(seed: int) -> None:
        body = {"intent": "search", "vector": query_vector(seed), "limit": 5}
        assert len(await backend.rows(body)) == 5

    async def upsert(i: int) -> None:
        point = {"id": 5000 + i, "vector": query_vector(i)}
        assert await backend.write({"intent": "upsert", "points": [point]}) == 1

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(search, 100 + i)
        for i in range(4):
            tg.start_soon(upsert, i)
    assert not met.broken, "two searches never ran at once"
    assert overlaps == []
    assert await backend.rows(count) == [{"count": before["count"] + 4}]
