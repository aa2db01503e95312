"""Link values flowing from a parent step to a linked child while the parent still streams.

A `LinkFeed` keeps the distinct non-NULL values seen so far and hands out the new ones in
sorted chunks. It is not a bounded stream on purpose: its size is bounded by the distinct
values (which must be remembered anyway, to never send one twice), and a parent that could
block on a child that waits for another branch of the DAG (a diamond) would deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Batch, Column


def column_index(columns: Sequence[Column], name: str) -> int | None:
    """Index of `name` among the columns (exact match first, then case-insensitive)."""
    for i, c in enumerate(columns):
        if c.name == name:
            return i
    lowered = name.lower()
    for i, c in enumerate(columns):
        if c.name.lower() == lowered:
            return i
    return None


def distinct_values(batch: Batch, index: int) -> list[Any]:
    """The distinct non-NULL values of one column of a batch (NULL is never a link value)."""
    if batch.arrow is not None:
        col = batch.arrow.column(index)
        try:
            return list(pc.unique(col).drop_null().to_pylist())
        except pa.ArrowNotImplementedError:  # extension types (arrow.uuid from ADBC)
            return list({v for v in col.to_pylist() if v is not None})
    return list({row[index] for row in batch.rows or () if row[index] is not None})


def sort_values(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed types (a MongoDB field): any stable order will do
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


class LinkFeed:
    """Distinct link values of one parent column for one child, in arrival order."""

    def __init__(self, parent: str, column: str) -> None:
        self.parent = parent
        self.column = column
        self.type: str | None = None  # the parent column's DuckDB type, once seen
        self.seen: set[Any] = set()
        self._pending: list[Any] = []
        self._closed = False
        self._event = anyio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, values: list[Any]) -> int:
        """Queue the values not seen before; returns how many were new."""
        new = [v for v in values if v not in self.seen]
        if new:
            self.seen.update(new)
            self._pending.extend(new)
            self._event.set()
        return len(new)

    def close(self) -> None:
        """The parent finished: no more values will come."""
        self._closed = True
        self._event.set()

    def drain(self) -> list[Any]:
        """Every value queued and not yet taken (used once the parent has finished)."""
        out, self._pending = self._pending, []
        return out

    async def take(self, limit: int) -> list[Any] | None:
        """The next chunk of at most `limit` new values, sorted; None once closed and empty.

        Waits for the parent when nothing is queued, so the child runs as soon as values
        exist and never waits to fill a whole chunk.
        """
        while True:
            if self._pending:
                chunk = self._pending[:limit]
                del self._pending[:limit]
                return sort_values(chunk)
            if self._closed:
                return None
            self._event = anyio.Event()
            await self._event.wait()


def keep_matching(batch: Batch, index: int, values: set[Any]) -> Batch:
    """Rows of `batch` whose column `index` is one of `values` (the full-scan strategy)."""
    if batch.arrow is not None:
        col = batch.arrow.column(index)
        try:
            value_set = pa.array(list(values)).cast(col.type)
            mask = pc.is_in(col, value_set=value_set)
            return Batch(batch.columns, arrow=batch.arrow.filter(mask))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            rows = [tuple(r.values()) for r in batch.arrow.to_pylist()]
            batch = Batch(batch.columns, rows=rows)
    return Batch(batch.columns, rows=[r for r in batch.rows or () if r[index] in values])
