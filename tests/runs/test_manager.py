"""The run manager in-process over both stores, executing real PostgreSQL queries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from engine.run_errors import IdempotencyConflict, QueueFull, RunNotTerminal
from engine.run_records import RunRecord, StoredLog
from engine.run_state import RunSettings
from engine.runs import RunManager
from tests.runs.conftest import StoreFactory
from tests.runs.workload import active_sleeps, dag, pg_executor
from tests.servers import PgServer


@asynccontextmanager
async def running(
    store_factory: StoreFactory, pg: PgServer, **kw: Any
) -> AsyncIterator[RunManager]:
    kw.setdefault("heartbeat_secs", 0.2)
    kw.setdefault("poll_secs", 0.2)
    manager = RunManager(store_factory(), pg_executor(pg.dsn), RunSettings(**kw))
    async with anyio.create_task_group() as tg:
        await tg.start(manager.serve)
        try:
            yield manager
        finally:
            tg.cancel_scope.cancel()


async def wait_status(
    manager: RunManager, run_id: str, *statuses: str, within: float = 20
) -> RunRecord:
    with anyio.fail_after(within):
        while True:
            record = await manager.get(run_id)
            if record.status in statuses:
                return record
            await anyio.sleep(0.05)


async def test_lifecycle(store_factory: StoreFactory, pg_server: PgServer) -> None:
    async with running(store_factory, pg_server) as m:
        run, created = await m.submit(
            dag("SELECT generate_series(1, 7) AS n", "SELECT 1 AS one"),
            name="two",
            labels={"k": "v"},
            steps=["s0", "s1"],
        )
        assert created and run.status == "queued" and len(run.run_id) == 32
        done = await wait_status(m, run.run_id, "completed", "failed")
        assert done.status == "completed", done.error
        assert done.records_written == 8
        assert [(s.step_id, s.state, s.rows) for s in done.steps] == [
            ("s0", "completed", 7),
            ("s1", "completed", 1),
        ]
        assert done.started_at is not None and done.finished_at is not None
        assert done.submitted_at <= done.started_at <= done.finished_at
        stored = await m.store.get(run.run_id)
        assert stored is not None and stored.status == "completed"
        assert stored.labels == {"k": "v"} and stored.records_written == 8
        messages = [ln.message for ln in await m.logs_after(run.run_id, 0)]
        assert messages[0] == "run queued (two)"
        assert messages[-1].startswith("run completed: 8 records")
        assert any(msg.startswith("step s0: completed, 7 rows") for msg in messages)
        # run ids sort by submission time
        second, _ = await m.submit(dag("SELECT 1"))
        assert second.run_id > run.run_id
        listed = await m.list(limit=10)
        assert [r.run_id for r in listed][:2] == [second.run_id, run.run_id]


async def test_cancel_running_stops_the_native_query(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server) as m:
        run, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, run.run_id, "running")
        with anyio.fail_after(10):
            while await active_sleeps(pg_server.dsn, run.run_id) == 0:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        started = time.monotonic()
        _, accepted = await m.cancel(run.run_id)
        assert accepted
        done = await wait_status(m, run.run_id, "cancelled", "failed", "completed")
        assert time.monotonic() - started < 5
        assert done.status == "cancelled"
        assert done.error is not None and done.error.reason == "cancelled"
        assert await active_sleeps(pg_server.dsn, run.run_id) == 0
        # a terminal run: cancel is a no-op, delete works
        _, accepted = await m.cancel(run.run_id)
        assert not accepted
        await m.delete(run.run_id)
        assert await m.store.get(run.run_id) is None


async def test_cancel_queued_at_once_and_delete_rules(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server, max_concurrent_runs=1) as m:
        first, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, first.run_id, "running")
        second, _ = await m.submit(dag("SELECT 2"))
        assert (await m.get(second.run_id)).status == "queued"
        with pytest.raises(RunNotTerminal):
            await m.delete(second.run_id)
        record, accepted = await m.cancel(second.run_id)
        assert accepted and record.status == "cancelled"
        with pytest.raises(RunNotTerminal):
            await m.delete(first.run_id)
        await m.cancel(first.run_id)
        await wait_status(m, first.run_id, "cancelled")
        # the cancelled queued run never started
        assert (await m.get(second.run_id)).started_at is None


async def test_timeout_fails_with_reason(store_factory: StoreFactory, pg_server: PgServer) -> None:
    async with running(store_factory, pg_server) as m:
        run, _ = await m.submit(dag("SELECT pg_sleep(20)"), timeout_secs=0.5)
        done = await wait_status(m, run.run_id, "failed", "completed", "cancelled")
        assert done.status == "failed"
        assert done.error is not None and done.error.reason == "timeout"
        assert await active_sleeps(pg_server.dsn, run.run_id) == 0


async def test_idempotency(store_factory: StoreFactory, pg_server: PgServer) -> None:
    async with running(store_factory, pg_server, max_concurrent_runs=1, max_queued_runs=2) as m:
        body = dag("SELECT 1")
        a, created_a = await m.submit(body, idempotency_key="k1", name="x")
        b, created_b = await m.submit(body, idempotency_key="k1", name="x")
        assert created_a and not created_b and a.run_id == b.run_id
        with pytest.raises(IdempotencyConflict) as info:
            await m.submit(dag("SELECT 2"), idempotency_key="k1", name="x")
        assert info.value.details["run_id"] == a.run_id
        with pytest.raises(IdempotencyConflict):  # options are part of the payload
            await m.submit(body, idempotency_key="k1", name="y")

        # two concurrent submits with one key create one run
        results: list[tuple[RunRecord, bool]] = []

        async def submit() -> None:
            results.append(await m.submit(dag("SELECT 3"), idempotency_key="k2"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(submit)
        assert len({r.run_id for r, _ in results}) == 1
        assert sum(created for _, created in results) == 1

        # deleting a finished run frees its key
        await wait_status(m, a.run_id, "completed")
        await m.delete(a.run_id)
        c, created_c = await m.submit(dag("SELECT 2"), idempotency_key="k1", name="x")
        assert created_c and c.run_id != a.run_id


async def test_queue_full_and_replay_is_never_429(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server, max_concurrent_runs=1, max_queued_runs=2) as m:
        blocker, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, blocker.run_id, "running")
        q1, _ = await m.submit(dag("SELECT 1"), idempotency_key="q1")
        await m.submit(dag("SELECT 2"))
        with pytest.raises(QueueFull) as info:
            await m.submit(dag("SELECT 3"))
        assert info.value.retry_after >= 1
        assert info.value.details == {"queued": 2, "max_queued_runs": 2}
        replay, created = await m.submit(dag("SELECT 1"), idempotency_key="q1")
        assert not created and replay.run_id == q1.run_id
        await m.cancel(blocker.run_id)


async def test_idempotency_across_processes_sharing_a_store(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    """Two managers over one store (two server processes): the unique key decides."""
    async with running(store_factory, pg_server) as m1, running(store_factory, pg_server) as m2:
        results: list[tuple[RunRecord, bool]] = []

        async def submit(m: RunManager) -> None:
            results.append(await m.submit(dag("SELECT 1"), idempotency_key="shared"))

        async with anyio.create_task_group() as tg:
            for m in (m1, m2, m1, m2):
                tg.start_soon(submit, m)
        assert len({r.run_id for r, _ in results}) == 1
        assert sum(created for _, created in results) == 1


async def test_restart_fails_running_and_runs_queued(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    """A process died with one run running and one queued (rows left as they were)."""
    store = store_factory()
    await store.open()
    now = time.time()
    dead = RunRecord(
        run_id="0" * 31 + "1",
        status="running",
        submitted_at=now - 5,
        started_at=now - 4,
        config=dag("SELECT 1"),
        payload_hash="x",
        owner="dead:0",
        heartbeat_at=now - 3600,
    )
    queued = RunRecord(
        run_id="0" * 31 + "2",
        status="queued",
        submitted_at=now - 3,
        config=dag("SELECT 41 + 1 AS answer"),
        payload_hash="y",
    )
    await store.insert(dead)
    await store.insert(queued)
    await store.append_logs(dead.run_id, [StoredLog(1, now, "info", "run started")], 100)
    await store.close()
    async with running(store_factory, pg_server) as m:
        failed = await m.get(dead.run_id)
        assert failed.status == "failed"
        assert failed.error is not None and failed.error.reason == "server_restart"
        lines = await m.logs_after(dead.run_id, 0)
        assert [ln.seq for ln in lines] == [1, 2]
        assert "server_restart" in lines[-1].message
        done = await wait_status(m, queued.run_id, "completed", "failed")
        assert done.status == "completed" and done.records_written == 1


async def test_drain_finishes_short_runs_and_cancels_long_ones(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server, grace_secs=1.5) as m:
        short, _ = await m.submit(dag("SELECT pg_sleep(0.5)"))
        long, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, short.run_id, "running")
        await wait_status(m, long.run_id, "running")
        with anyio.fail_after(10):
            await m.drain()
        assert (await m.store.get(short.run_id)).status == "completed"  # type: ignore[union-attr]
        gone = await m.store.get(long.run_id)
        assert gone is not None and gone.status == "cancelled"
        assert gone.error is not None and gone.error.reason == "shutdown"
        assert await active_sleeps(pg_server.dsn, long.run_id) == 0
        assert m.draining and not m.accepting


async def test_idempotency_keys_expire(store_factory: StoreFactory, pg_server: PgServer) -> None:
    async with running(store_factory, pg_server, key_ttl_secs=0.3) as m:
        first, _ = await m.submit(dag("SELECT 1"), idempotency_key="short")
        with pytest.raises(IdempotencyConflict):
            await m.submit(dag("SELECT 2"), idempotency_key="short")
        await anyio.sleep(0.4)
        second, created = await m.submit(dag("SELECT 2"), idempotency_key="short")
        assert created and second.run_id != first.run_id
        assert await m.store.find_key("short") == (second.run_id, second.payload_hash)
