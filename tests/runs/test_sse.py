"""The SSE event stream of a run, in-process: replay, resume, `truncated` when the reader
fell behind the ring buffer or the persisted tail, `end` with the final status."""

from __future__ import annotations

import anyio

from api.client import Event, parse_sse
from api.sse import run_events
from engine.run_logs import RunLog
from engine.runs import RunManager
from tests.runs.conftest import StoreFactory
from tests.runs.test_manager import running, wait_status
from tests.runs.workload import dag
from tests.servers import PgServer


async def collect(manager: RunManager, run_id: str, after: int = 0) -> list[Event]:
    chunks = [c async for c in run_events(manager, run_id, after)]
    return list(parse_sse(iter(b"".join(chunks).decode().split("\n"))))


def test_ring_buffer_truncates_and_resumes() -> None:
    buf = RunLog("r", capacity=3)
    for i in range(5):
        buf.append(f"line {i}")
    tail = buf.read(0)
    assert tail.truncated and [ln.id for ln in tail.lines] == [3, 4, 5]
    assert not buf.read(2).truncated
    assert [ln.id for ln in buf.read(4).lines] == [5]
    assert not tail.ended
    buf.end("completed")
    assert buf.read(5).ended and buf.read(5).lines == []


async def test_stream_truncated_then_end(store_factory: StoreFactory, pg_server: PgServer) -> None:
    async with running(store_factory, pg_server, log_capacity=4, persisted_log_lines=6) as m:
        run, _ = await m.submit(dag(*[f"SELECT {i}" for i in range(6)]))
        await wait_status(m, run.run_id, "completed")
        events = await collect(m, run.run_id)
        assert events[0].event == "truncated"
        logs = [e for e in events if e.event == "log"]
        assert len(logs) == 4 and logs[-1].data["message"].startswith("run completed")
        assert events[-1] == Event("end", {"status": "completed"})
        first_kept = logs[0].id
        assert events[0].data["next_id"] == first_kept
        assert events[0].data["dropped"] == first_kept - 1
        # resuming inside the buffer: no truncation, exactly the later lines
        resumed = await collect(m, run.run_id, after=first_kept)
        assert [e.id for e in resumed if e.event == "log"] == [e.id for e in logs[1:]]
        assert resumed[0].event == "log"
        # once the buffer is dropped the persisted tail (last 6 lines) answers
        m.logs.drop(run.run_id)
        stored = await collect(m, run.run_id)
        assert stored[0].event == "truncated"
        assert len([e for e in stored if e.event == "log"]) == 6
        assert stored[-1] == Event("end", {"status": "completed"})


async def test_live_tail_waits_for_a_queued_run(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server, max_concurrent_runs=1) as m:
        blocker, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, blocker.run_id, "running")
        run, _ = await m.submit(dag("SELECT 1"))
        seen: list[bytes] = []
        ended = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                async for chunk in run_events(m, run.run_id):
                    seen.append(chunk)
                ended.set()

            tg.start_soon(read)
            await anyio.sleep(0.3)
            assert len(seen) == 1 and b"run queued" in seen[0]  # waiting, no `end`
            await m.cancel(blocker.run_id)
            with anyio.fail_after(10):
                await ended.wait()
        assert seen[-1].startswith(b"event: end") and b'"status":"completed"' in seen[-1]


async def test_streams_end_when_the_server_stops(
    store_factory: StoreFactory, pg_server: PgServer
) -> None:
    async with running(store_factory, pg_server, max_concurrent_runs=1, grace_secs=0.2) as m:
        blocker, _ = await m.submit(dag("SELECT pg_sleep(30)"))
        await wait_status(m, blocker.run_id, "running")
        queued, _ = await m.submit(dag("SELECT 1"))
        ends: dict[str, Event] = {}
        async with anyio.create_task_group() as tg:

            async def read(run_id: str) -> None:
                ends[run_id] = (await collect(m, run_id))[-1]

            tg.start_soon(read, blocker.run_id)
            tg.start_soon(read, queued.run_id)
            await anyio.sleep(0.3)
            with anyio.fail_after(10):
                await m.drain()
        assert ends[blocker.run_id] == Event("end", {"status": "cancelled"})
        assert ends[queued.run_id] == Event(
            "end", {"status": "queued", "reason": "server_stopping"}
        )
