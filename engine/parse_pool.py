"""Parsing that would hold the GIL for seconds runs in a child process, with a time bound.

ruamel's round-trip YAML parser (kept for its line numbers) costs about 4 us a byte and far
more for nested flow style: a 200 KB run config took seconds of pure Python, and in a worker
thread it still held the GIL against the event loop. A child process parses large documents
instead; one that passes `timeout` is killed (and the pool restarted), so a costly document
costs its sender a refusal, and every other client nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from engine.errors import ParseTooCostly

T = TypeVar("T")
STARTUP_TIMEOUT_S = 60.0


class ParsePool:
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: a clean child, never a fork of a threaded server process
            context = multiprocessing.get_context("forkserver")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    async def _started(self, func: Callable[..., Any]) -> concurrent.futures.ProcessPoolExecutor:
        """The pool, its child started and `func`'s module imported first, so a document's
        time bound is spent parsing, not starting a process (the first use waits for it)."""
        if self._pool is None:
            pool = self._executor()
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                await asyncio.wrap_future(pool.submit(_import, func.__module__))
        return self._executor()

    async def run(self, func: Callable[..., T], *args: Any, seconds: float, what: str) -> T:
        """`func(*args)` in a child process (`func` must return, not raise, its errors: many
        exception types do not survive pickling). Raises ParseTooCostly past `seconds`."""
        future = (await self._started(func)).submit(func, *args)
        try:
            with anyio.fail_after(seconds):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            self._kill()
            raise ParseTooCostly(what, seconds) from None
        except anyio.get_cancelled_exc_class():
            future.cancel()
            raise

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _import(module: str) -> None:
    import importlib

    importlib.import_module(module)
