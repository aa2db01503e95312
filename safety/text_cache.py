"""The per-text caches behind "parse once": an LRU keyed by the call's arguments that lets
long texts through uncached, so unique 100k-character queries cannot fill memory with
keys and ASTs (dashboard queries, the ones that repeat, are short)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

CACHE_MAX_CHARS = 16_384  # longer texts are analysed every time
CACHE_ENTRIES = 2048


def text_cache(fn: Callable[P, R]) -> Callable[P, R]:
    cached = functools.lru_cache(maxsize=CACHE_ENTRIES)(fn)

    @functools.wraps(fn)
    def lookup(*args: P.args, **kwargs: P.kwargs) -> R:
        if any(isinstance(a, str) and len(a) > CACHE_MAX_CHARS for a in args):
            return fn(*args, **kwargs)
        return cached(*args, **kwargs)  # type: ignore[arg-type]  # P.kwargs are hashable here

    lookup.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return lookup
