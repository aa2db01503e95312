"""Blocking driver calls (SQLite, DuckDB, ADBC) off the event loop, stoppable from it.

`anyio.to_thread.run_sync` cannot be cancelled while the thread runs; a statement that runs
for minutes would pin the caller. `call_interruptible` runs the call in a worker thread and,
when the caller is cancelled (timeout, client gone), keeps asking the driver to stop
(`interrupt()`: sqlite3/DuckDB `interrupt`, ADBC `adbc_cancel`) until the thread returns, so
the connection is idle again before anyone reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")

INTERRUPT_EVERY_S = 0.05


async def call_interruptible(fn: Callable[[], T], interrupt: Callable[[], Any]) -> T:
    """Run `fn()` in a worker thread; on cancellation interrupt it and wait for the thread.

    The call's own exception is re-raised as is (never wrapped in an exception group).
    """
    outcome: dict[str, Any] = {}

    async def run() -> None:
        try:
            outcome["value"] = await anyio.to_thread.run_sync(fn)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc
        finally:
            outcome["done"] = True
            tg.cancel_scope.cancel()

    async def watch() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not outcome.get("done"):
                with anyio.CancelScope(shield=True):
                    while not outcome.get("done"):
                        interrupt()
                        await anyio.sleep(INTERRUPT_EVERY_S)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(run)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def next_batch(reader: pa.RecordBatchReader) -> Callable[[], pa.RecordBatch | None]:
    """A blocking call that reads the reader's next batch, None at its end (for
    call_interruptible: the read runs in a worker thread, cancellable)."""

    def step() -> pa.RecordBatch | None:
        try:
            return reader.read_next_batch()
        except StopIteration:
            return None

    return step
