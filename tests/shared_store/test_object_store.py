"""The S3 result store on a real SeaweedFS with its index in real PostgreSQL: one store writes,
another (a second process's view: its own pool, no shared memory) pages; ownership, forged
ids, ranged reads, expiry and the count/byte bounds hold for both."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from engine.errors import ConfigError, ResultNotFound, ResultStoreUnavailable, ResultTooLarge
from engine.object_results import ObjectResultStore, filesystem
from engine.results import Reader
from tests.s3_server import S3Server
from tests.shared_store.conftest import CountingProxy, Place, StoreFactory

pytestmark = pytest.mark.anyio

ALICE, BOB, ADMIN = Reader("alice"), Reader("bob"), Reader("root", admin=True)


def table(n: int, offset: int = 0, width: int = 0) -> pa.Table:
    """`n` rows; `width` random bytes more in each (incompressible: a large object)."""
    return pa.table(
        {
            "i": pa.array(range(offset, offset + n), pa.int64()),
            "s": pa.array(
                [f"value {k} {os.urandom(width).hex()}" for k in range(offset, offset + n)]
            ),
        }
    )


async def put(store: ObjectResultStore, rid: str, t: pa.Table, owner: str | None = "alice") -> int:
    stored = await anyio.to_thread.run_sync(
        lambda: store.store_table(rid, t, head_rows=2, owner=owner)
    )
    return stored.nbytes


def objects(s3: S3Server, place: Place) -> list[str]:
    fs = s3.filesystem()
    infos = fs.get_file_info(
        pafs.FileSelector(f"{s3.bucket}/{place.prefix}".rstrip("/"), allow_not_found=True)
    )
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


@pytest.fixture
async def two(
    make_store: StoreFactory,
) -> AsyncIterator[tuple[ObjectResultStore, ObjectResultStore]]:
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_a_result_stored_by_one_pages_from_the_other(
    two: tuple[ObjectResultStore, ...],
) -> None:
    a, b = two
    await put(a, "req_shared00001", table(2_500))
    seen: list[int] = []
    page = 1
    while True:
        got = await b.page("req_shared00001", page, 400, ALICE)
        assert got.total == 2_500 and got.columns == ["i", "s"] and got.owner == "alice"
        seen += [r["i"] for r in got.rows]
        if not got.has_more:
            break
        page += 1
    assert seen == list(range(2_500))
    assert (await b.page("req_shared00001", 99, 400, ALICE)).rows == []
    # the whole file, from the other store
    source = await b.open_file("req_shared00001", ALICE)
    with source:
        assert source.size() > 0


async def test_another_principal_or_a_forged_id_is_not_found(
    two: tuple[ObjectResultStore, ...],
) -> None:
    a, b = two
    await put(a, "req_alice000001", table(10))
    for store in (a, b):
        for reader in (BOB, Reader(None)):
            with pytest.raises(ResultNotFound):
                await store.page("req_alice000001", 1, 10, reader)
            with pytest.raises(ResultNotFound):
                await store.open_file("req_alice000001", reader)
        # guessed and malformed ids, and the object key itself, are unknown alike
        for forged in ("req_alice000002", "req_alice00000", "../req_alice000001", "x" * 65, ""):
            with pytest.raises(ResultNotFound):
                await store.page(forged, 1, 10, ALICE)
        keys = [k for k in objects_of(store) if k.startswith("req_alice000001")]
        assert len(keys) == 1
        with pytest.raises(ResultNotFound):
            await store.page(keys[0].removesuffix(".parquet"), 1, 10, ALICE)
        # the admin grant reads any
        assert (await store.page("req_alice000001", 1, 10, ADMIN)).total == 10


def objects_of(store: ObjectResultStore) -> list[str]:
    infos = store.fs.get_file_info(
        pafs.FileSelector(f"{store.bucket}/{store.prefix}".rstrip("/"), allow_not_found=True)
    )
    return [i.base_name for i in infos if i.type == pafs.FileType.File]


async def test_a_page_reads_only_the_footer_and_its_row_groups(
    make_store: StoreFactory, proxy: CountingProxy
) -> None:
    writer = make_store(row_group_rows=2_000)
    reader = make_store(endpoint=proxy.endpoint)  # another process: nothing cached
    await writer.open()
    await reader.open()
    try:
        nbytes = await put(writer, "req_ranged00001", table(100_000, width=32))
        assert nbytes > 6_000_000  # 50 row groups of ~130 KB
        proxy.reset()
        got = await reader.page("req_ranged00001", 31, 1_000, ALICE)  # rows 30,000..30,999
        assert [r["i"] for r in got.rows] == list(range(30_000, 31_000))
        first = proxy.received
        assert 0 < first < nbytes / 10, (first, nbytes)
        proxy.reset()
        got = await reader.page("req_ranged00001", 80, 1_000, ALICE)
        assert got.rows[0]["i"] == 79_000
        # the footer is kept now: only the row group and a HEAD come back
        assert 0 < proxy.received < first, (proxy.received, first)
    finally:
        await writer.close()
        await reader.close()


async def test_expired_results_are_gone_everywhere_and_their_objects_removed(
    make_store: StoreFactory, s3: S3Server, place: Place
) -> None:
    a, b = make_store(ttl=1.0), make_store(ttl=1.0)
    await a.open()
    await b.open()
    try:
        await put(a, "req_expires0001", table(5))
        assert (await b.page("req_expires0001", 1, 10, ALICE)).total == 5
        assert len(objects(s3, place)) == 1
        await anyio.sleep(1.3)
        for store in (a, b):  # the memory copy in `a` does not outlive the index row
            with pytest.raises(ResultNotFound):
                await store.page("req_expires0001", 1, 10, ALICE)
        assert await anyio.to_thread.run_sync(b.evict) == ["req_expires0001"]
        assert objects(s3, place) == []
        assert len(a) == 1 and len(b) == 0  # `a` learns the totals at its next eviction
    finally:
        await a.close()
        await b.close()


async def test_count_and_byte_bounds_hold_across_stores(
    make_store: StoreFactory, s3: S3Server, place: Place
) -> None:
    a, b = make_store(max_results=2), make_store(max_results=2)
    await a.open()
    await b.open()
    try:
        await put(a, "req_bound000001", table(10))
        await put(b, "req_bound000002", table(10))
        await anyio.sleep(0.01)
        await put(a, "req_bound000003", table(10))  # the oldest (stored by `a`) goes
        for store in (a, b):
            with pytest.raises(ResultNotFound):
                await store.page("req_bound000001", 1, 10, ALICE)
            assert (await store.page("req_bound000002", 1, 10, ALICE)).total == 10
        assert len(objects(s3, place)) == 2
        assert len(a) == 2
    finally:
        await a.close()
        await b.close()

    one = min(a.nbytes, b.nbytes) // 2 or 1
    c = make_store(max_bytes=int(one * 2.5))
    await c.open()
    try:
        for rid in ("req_bound000002", "req_bound000003"):
            await anyio.to_thread.run_sync(c.delete, rid)
        for rid in ("req_bytes000001", "req_bytes000002", "req_bytes000003"):
            await put(c, rid, table(10))
        assert len(c) == 2 and c.nbytes <= one * 2.5
        with pytest.raises(ResultNotFound):
            await c.page("req_bytes000001", 1, 10, ALICE)
        assert len(objects(s3, place)) == 2
        # a result larger than the whole store's bound is refused while it is written, and
        # leaves nothing behind
        with pytest.raises(ResultTooLarge):
            await put(c, "req_toolarge001", table(50_000, width=32))
        with pytest.raises(ResultNotFound):
            await c.page("req_toolarge001", 1, 10, ALICE)
        assert not [k for k in objects(s3, place) if k.startswith("req_toolarge001")]
    finally:
        await c.close()


async def test_orphan_objects_are_swept_and_indexed_ones_kept(
    make_store: StoreFactory, s3: S3Server, place: Place
) -> None:
    store = make_store()
    await store.open()
    try:
        await put(store, "req_kept0000001", table(3))
        fs = s3.filesystem()
        for name in ("req_orphan00001.0123456789ab.parquet", "someone-elses.parquet"):
            with fs.open_output_stream(f"{s3.bucket}/{place.prefix}{name}") as out:
                out.write(b"left by a process killed before its index row, or not ours")
        # too young: an upload whose row is being written
        assert await anyio.to_thread.run_sync(store.sweep_orphans) == []
        gone = await anyio.to_thread.run_sync(lambda: store.sweep_orphans(older_than=0))
        assert gone == [f"{place.prefix}req_orphan00001.0123456789ab.parquet"]
        # what the store did not name is never touched
        assert [o.split(".")[0] for o in objects(s3, place)] == ["req_kept0000001", "someone-elses"]
        assert (await store.page("req_kept0000001", 1, 10, ALICE)).total == 3
    finally:
        await store.close()


async def test_a_missing_bucket_or_credential_fails_at_start(
    s3: S3Server, place: Place, make_store: StoreFactory
) -> None:
    with pytest.raises(ConfigError, match="SLUICE_S3_SECRET"):
        cfg = place.config
        filesystem(
            type(cfg)(**{**{f: getattr(cfg, f) for f in cfg.__struct_fields__},
                         "access_key_env": "SLUICE_S3_KEY", "secret_key_env": "SLUICE_S3_SECRET"}),
            env={"SLUICE_S3_KEY": "k"},
        )  # fmt: skip
    store = make_store()
    store.bucket = "no-such-bucket-here"
    with pytest.raises(ConfigError, match="does not exist"):
        await store.open()
    wrong = ObjectResultStore(
        filesystem(place.config, env={**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong"}),
        s3.bucket,
        place.prefix,
        make_store().index,
    )
    with pytest.raises(ConfigError, match="ACCESS_DENIED|AccessDenied|denied"):
        await wrong.open()


async def test_an_unreachable_bucket_or_index_is_a_503_not_an_internal_error(
    make_store: StoreFactory, proxy: CountingProxy
) -> None:
    writer, reader = make_store(), make_store(endpoint=proxy.endpoint)
    await writer.open()
    await reader.open()
    try:
        await put(writer, "req_unreach0001", table(30_000, width=8))
        reader._tables.clear()
        proxy.close()  # the bucket is gone for the reader
        with pytest.raises(ResultStoreUnavailable) as caught:
            await reader.page("req_unreach0001", 2, 10, ALICE)
        assert caught.value.status == 503 and "bucket" in caught.value.message
        await reader.index._pool.close()  # and now its index too (a closed pool)
        with pytest.raises(ResultStoreUnavailable, match="index"):
            await reader.page("req_unreach0001", 2, 10, ALICE)
        # the writer, still connected to both, pages it
        assert (await writer.page("req_unreach0001", 2, 10, ALICE)).rows[0]["i"] == 10
    finally:
        await writer.close()
        await reader.close()
