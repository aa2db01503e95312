"""GET /v1/runs/{id}/logs as Server-Sent Events: replay what the run said, then the live
tail. Events: `log` (with an `id:` line, so a client resumes with Last-Event-ID),
`truncated` (the reader fell behind the ring buffer or the persisted tail), and `end` (the
run is terminal, or the server is stopping), after which the stream closes.

A run whose in-memory buffer is gone (expired, another process, before a restart) is served
from the lines persisted in the run store, polling until it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from starlette.responses import StreamingResponse

from engine.runs import RunManager

KEEPALIVE_SECS = 15.0
POLL_SECS = 0.5
MEDIA_TYPE = "text/event-stream"
_ENC = msgspec.json.Encoder()


def event(kind: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {_ENC.encode(data).decode()}\n\n".encode()


def _log(event_id: int, ts: float, level: str, message: str) -> bytes:
    return event("log", {"ts": ts, "level": level, "message": message}, event_id)


def _truncated(after: int, next_id: int) -> bytes:
    """Lines after `after` and before `next_id` were dropped before the reader got them."""
    return event("truncated", {"after": after, "next_id": next_id, "dropped": next_id - after - 1})


async def _wait_any(*events: anyio.Event, within: float) -> bool:
    """Wait until one of `events` is set (True) or `within` seconds pass (False)."""
    fired = False
    with anyio.move_on_after(within):
        async with anyio.create_task_group() as tg:

            async def one(ev: anyio.Event) -> None:
                nonlocal fired
                await ev.wait()
                fired = True
                tg.cancel_scope.cancel()

            for ev in events:
                tg.start_soon(one, ev)
    return fired


async def run_events(manager: RunManager, run_id: str, after: int = 0) -> AsyncIterator[bytes]:
    """The event stream of one run, starting after event id `after`."""
    idle = 0.0
    while True:
        buf = manager.logs.get(run_id)
        if buf is not None:
            if after + 1 < buf.first_id:
                # the run was queued (or begun) elsewhere: its first lines are in the store
                earlier = [
                    ln for ln in await manager.logs_after(run_id, after) if ln.seq < buf.first_id
                ]
                if earlier and earlier[0].seq > after + 1:
                    yield _truncated(after, earlier[0].seq)
                for stored in earlier:
                    yield _log(stored.seq, stored.ts, stored.level, stored.message)
                    after = stored.seq
            tail = buf.read(after)
            if tail.truncated:
                first = tail.lines[0].id if tail.lines else buf.next_id
                yield event(
                    "truncated", {"after": after, "next_id": first, "dropped": first - after - 1}
                )
            for ln in tail.lines:
                yield _log(ln.id, ln.ts, ln.level, ln.message)
                after = ln.id
            if tail.ended:
                yield event("end", {"status": buf.final_status})
                return
            if manager.draining and run_id not in manager.live:
                # queued runs stay queued across the restart; this stream ends now
                record = await manager.get(run_id)
                yield event("end", {"status": record.status, "reason": "server_stopping"})
                return
            changed = anyio.Event()

            async def watch(target: Any = buf, at: int = after, ev: anyio.Event = changed) -> None:
                await target.wait(at)
                ev.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                # once draining, only the run's own end (or a line) wakes us: no busy loop
                watched = (changed,) if manager.draining else (changed, manager.stopped)
                fired = await _wait_any(*watched, within=KEEPALIVE_SECS)
                tg.cancel_scope.cancel()
            if not fired:
                yield b": keep-alive\n\n"
            continue

        # no buffer here: the persisted tail, polled until the run is terminal
        record = await manager.get(run_id)
        lines = await manager.logs_after(run_id, after)
        if lines and lines[0].seq > after + 1:
            yield _truncated(after, lines[0].seq)
        for stored in lines:
            yield _log(stored.seq, stored.ts, stored.level, stored.message)
            after = stored.seq
        if record.terminal:
            yield event("end", {"status": record.status})
            return
        if manager.draining and run_id not in manager.live:
            yield event("end", {"status": record.status, "reason": "server_stopping"})
            return
        with anyio.move_on_after(POLL_SECS):
            await manager.stopped.wait()
        idle = 0.0 if lines else idle + POLL_SECS
        if idle >= KEEPALIVE_SECS:
            idle = 0.0
            yield b": keep-alive\n\n"


def sse_response(manager: RunManager, run_id: str, after: int) -> StreamingResponse:
    return StreamingResponse(
        run_events(manager, run_id, after),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
