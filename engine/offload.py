"""Blocking work off the event loop: CPU-heavy parsing/analysis/encoding in worker threads
bounded by the core count, and DuckDB work that a cancel or a timeout interrupts.

The event loop only waits: a request that parses a large document or encodes a large answer
on it stalls every other client for as long (measured before this module: 1-3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import anyio
import sniffio

T = TypeVar("T")

# a Python thread holds the GIL while it parses: more of them than cores only queue
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)
INTERRUPT_WAIT_S = 30.0


# A thread running Python holds the GIL for up to the switch interval (5 ms by default)
# each time the event loop asks for it; a request's dozens of handoffs then cost it tens of
# milliseconds. 1 ms keeps the loop responsive while a worker parses or encodes.
SWITCH_INTERVAL_S = 0.001


def cpu_limiter() -> anyio.CapacityLimiter:
    """The running loop's limiter for CPU-bound work (one token per core)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(os.cpu_count() or 2)
    return limiter


@contextlib.contextmanager
def responsive_loop() -> Iterator[None]:
    """Held by a server process while it serves, entered on its event loop: worker threads
    hand the GIL back sooner, and the loop's thread tells sniffio it runs asyncio. Every
    anyio call (a limiter, a cancel scope, `current_time`) asks sniffio which library runs;
    undeclared, each ask looks up the current asyncio task, ~8% of a lookup's samples on the
    dashboard path (bench/results/dashboard.md)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    asyncio.get_running_loop()  # only a thread that runs an asyncio loop declares it
    previous = sniffio.thread_local.name
    sniffio.thread_local.name = "asyncio"
    try:
        yield
    finally:
        sniffio.thread_local.name = previous


async def off_loop(func: Callable[..., T], *args: object) -> T:
    """`func(*args)` in a worker thread, at most one per core at a time. `func` must be a
    pure computation: a cancelled caller returns at once and the thread's result is dropped
    (Python code cannot be interrupted; each such input is bounded in size instead)."""
    return await anyio.to_thread.run_sync(
        func, *args, limiter=cpu_limiter(), abandon_on_cancel=True
    )


async def interruptible(func: Callable[[], T], interrupt: Callable[[], None]) -> T:
    """`func()` in a worker thread; if the caller is cancelled (client gone, cancel, timeout)
    `interrupt()` is called from here (e.g. DuckDB's `interrupt()`) and the thread is awaited,
    so nothing keeps computing, or touches the request's state, after the request ended."""
    finished = threading.Event()

    def work() -> T:
        try:
            return func()
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        interrupt()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(finished.wait, INTERRUPT_WAIT_S)
        raise
