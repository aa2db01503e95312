"""Deterministic generation of the benchmark tables as Arrow chunks.

Every chunk is drawn from its own seed (seed, table, chunk index), so the data does not
depend on how many chunks a loader asks for at once, and any loader can stream the large
table without holding it whole. Numbers come from numpy's PCG64; strings and timestamps
are built with pyarrow compute, never one Python object per value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Bump when the generated values change, so existing databases are rebuilt.
GENERATOR_VERSION = 1
DEFAULT_SEED = 7_2024
CHUNK_ROWS = 500_000

COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE", "PL", "AU")
COUNTRY_WEIGHTS = (30, 10, 8, 8, 12, 6, 5, 5, 4, 4, 2, 2, 2, 2)
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
STATUS_WEIGHTS = (10, 20, 20, 40, 7, 3)
KINDS = ("view", "click", "add_to_cart", "purchase", "refund")
KIND_WEIGHTS = (50, 25, 12, 10, 3)

# 2023-01-01T00:00:00Z and 2024-01-01T00:00:00Z in seconds
USERS_EPOCH = 1_672_531_200
ORDERS_EPOCH = 1_704_067_200
YEAR_S = 365 * 86_400
WEEK_S = 7 * 86_400

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(12, 2)

SCHEMAS: dict[str, pa.Schema] = {
    "users": pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("email", pa.string(), nullable=False),
            pa.field("country", pa.string(), nullable=False),
            pa.field("created_at", TS, nullable=False),
        ]
    ),
    "orders": pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("total", MONEY, nullable=False),
            pa.field("created_at", TS, nullable=False),
        ]
    ),
    "events": pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("order_id", pa.int64(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("amount", MONEY, nullable=False),
            pa.field("ts", TS, nullable=False),
        ]
    ),
}
TABLES = ("users", "orders", "events")
_TABLE_IDS = {"users": 1, "orders": 2, "events": 3}


@dataclass(frozen=True)
class Spec:
    """What a dataset holds; equal specs generate identical rows."""

    scale: int
    users: int
    orders: int
    events: int
    seed: int = DEFAULT_SEED
    version: int = GENERATOR_VERSION

    def rows(self, table: str) -> int:
        return int(getattr(self, table))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def spec_for(scale: int, events: int | None = None, seed: int = DEFAULT_SEED) -> Spec:
    """The dataset for a scale: `scale` events, a tenth as many orders, a hundredth as many
    users (at least 10 of each); `events` overrides the events count alone."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    n_events = scale if events is None else events
    if n_events < 1:
        raise ValueError(f"events must be at least 1, got {n_events}")
    return Spec(
        scale=scale,
        users=max(10, scale // 100),
        orders=max(10, scale // 10),
        events=n_events,
        seed=seed,
    )


def _rng(spec: Spec, table: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, _TABLE_IDS[table], chunk]))


def _choice(rng: np.random.Generator, values: tuple[str, ...], weights: tuple[int, ...], n: int):
    p = np.asarray(weights, dtype=np.float64)
    idx = rng.choice(len(values), size=n, p=p / p.sum())
    return pc.take(pa.array(values, pa.string()), pa.array(idx, pa.int32()))


def _money(cents: np.ndarray) -> pa.Array:
    """decimal128(12, 2) straight from integer cents (little-endian 128-bit words)."""
    words = np.empty(len(cents) * 2, dtype=np.int64)
    words[0::2] = cents
    words[1::2] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(MONEY, len(cents), [None, pa.py_buffer(words)])


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, TS)


def _ids(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


def _prefixed(prefix: str, ids: np.ndarray, suffix: str = "") -> pa.Array:
    text = pc.cast(pa.array(ids), pa.string())
    parts: list[pa.Array | str] = [prefix, text, suffix] if suffix else [prefix, text]
    return pc.binary_join_element_wise(*parts, "")


def _chunk_bounds(total: int) -> Iterator[tuple[int, int, int]]:
    for chunk, start in enumerate(range(0, total, CHUNK_ROWS)):
        yield chunk, start + 1, min(CHUNK_ROWS, total - start)


def users_chunk(spec: Spec, chunk: int, first_id: int, n: int) -> pa.Table:
    rng = _rng(spec, "users", chunk)
    ids = _ids(first_id, n)
    return pa.Table.from_arrays(
        [
            pa.array(ids),
            _prefixed("user_", ids),
            _prefixed("user", ids, "@example.com"),
            _choice(rng, COUNTRIES, COUNTRY_WEIGHTS, n),
            _timestamps(USERS_EPOCH + rng.integers(0, YEAR_S, n)),
        ],
        schema=SCHEMAS["users"],
    )


def _orders_arrays(
    spec: Spec, chunk: int, n: int
) -> tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray]:
    rng = _rng(spec, "orders", chunk)
    user_id = rng.integers(1, spec.users + 1, n, dtype=np.int64)
    status = _choice(rng, STATUSES, STATUS_WEIGHTS, n)
    total = rng.integers(500, 100_000, n, dtype=np.int64)
    created = ORDERS_EPOCH + rng.integers(0, YEAR_S, n)
    return user_id, status, total, created


def orders_chunk(spec: Spec, chunk: int, first_id: int, n: int) -> pa.Table:
    user_id, status, total, created = _orders_arrays(spec, chunk, n)
    return pa.Table.from_arrays(
        [
            pa.array(_ids(first_id, n)),
            pa.array(user_id),
            status,
            _money(total),
            _timestamps(created),
        ],
        schema=SCHEMAS["orders"],
    )


def order_owners(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """Each order's user_id and created_at (seconds), indexed by order id - 1; events copy
    them so an event belongs to its order's user and happens after the order was placed."""
    users = np.empty(spec.orders, dtype=np.int64)
    created = np.empty(spec.orders, dtype=np.int64)
    for chunk, first_id, n in _chunk_bounds(spec.orders):
        user_id, _, _, when = _orders_arrays(spec, chunk, n)
        users[first_id - 1 : first_id - 1 + n] = user_id
        created[first_id - 1 : first_id - 1 + n] = when
    return users, created


def events_chunk(
    spec: Spec, chunk: int, first_id: int, n: int, owners: tuple[np.ndarray, np.ndarray]
) -> pa.Table:
    rng = _rng(spec, "events", chunk)
    ids = _ids(first_id, n)
    # Orders are clustered along event ids: the first k events reference about
    # k * orders / events distinct orders, so "the first N events joined to their orders"
    # touches a predictable number of link keys at every N.
    order_id = (ids - 1) * spec.orders // spec.events + 1
    order_user, order_created = owners
    return pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array(order_user[order_id - 1]),
            pa.array(order_id),
            _choice(rng, KINDS, KIND_WEIGHTS, n),
            _money(rng.integers(100, 50_000, n, dtype=np.int64)),
            _timestamps(order_created[order_id - 1] + rng.integers(0, WEEK_S, n)),
        ],
        schema=SCHEMAS["events"],
    )


def last_order_of(spec: Spec, n_events: int) -> int:
    """The largest order id among the first n events (they reference orders 1..that)."""
    n = max(1, min(n_events, spec.events))
    return (n - 1) * spec.orders // spec.events + 1


def chunks(spec: Spec, table: str) -> Iterator[pa.Table]:
    """The table's rows in id order, CHUNK_ROWS at a time."""
    total = spec.rows(table)
    if table == "users":
        for chunk, first_id, n in _chunk_bounds(total):
            yield users_chunk(spec, chunk, first_id, n)
    elif table == "orders":
        for chunk, first_id, n in _chunk_bounds(total):
            yield orders_chunk(spec, chunk, first_id, n)
    elif table == "events":
        owners = order_owners(spec)
        for chunk, first_id, n in _chunk_bounds(total):
            yield events_chunk(spec, chunk, first_id, n, owners)
    else:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")


def generate(spec: Spec, table: str) -> pa.Table:
    """The whole table at once (tests and small scales)."""
    return pa.concat_tables(list(chunks(spec, table)))


def as_text_timestamps(tbl: pa.Table) -> pa.Table:
    """Timestamps as 'YYYY-MM-DD HH:MM:SS' (UTC) for CSV and SQLite, which every loader
    reads the same way (PostgreSQL sessions run with timezone=UTC)."""
    cols = []
    for field, col in zip(tbl.schema, tbl.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            col = pc.strftime(pc.cast(col, pa.timestamp("s", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
        cols.append(col)
    return pa.Table.from_arrays(cols, names=tbl.column_names)
