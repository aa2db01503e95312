"""Shared helpers of the engine tests: generated rows, the reference DuckDB comparison, a
recording wrapper around real connectors, CheckedSteps built without the pipeline."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

from connectors.base import Connector, LinkFilter, Statement
from engine.ir import FederatedQuery
from engine.plan import CheckedPlan, build_plan
from safety.types import CheckedStep, CheckRequest, Rewrite, SafetyOutcome

REGIONS = ["north", "south", "east", "west", "centre"]
N_CUSTOMERS = 300
N_ORDERS = 1_500
N_ITEMS = 3_000
N_TICKETS = 600


@dataclass
class Data:
    customers: list[tuple[Any, ...]]
    orders: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    regions: list[tuple[Any, ...]]
    tickets: list[tuple[Any, ...]]


def generate() -> Data:
    rnd = random.Random(42)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    customers = [
        (
            i,
            f"customer {i}",
            REGIONS[i % len(REGIONS)],
            decimal.Decimal(rnd.randint(-50_000, 500_000)) / 100,
            base + dt.timedelta(minutes=37 * i),
            uuid.UUID(int=rnd.getrandbits(128)),
            {"tier": i % 3, "tags": ["a", "b"][: i % 3]},
        )
        for i in range(1, N_CUSTOMERS + 1)
    ]
    orders = []
    for i in range(1, N_ORDERS + 1):
        r = rnd.random()
        # NULLs, ids with no customer, and many duplicates (several orders per customer)
        cid = (
            None
            if r < 0.05
            else N_CUSTOMERS + rnd.randint(1, 50)
            if r < 0.1
            else (rnd.randint(1, N_CUSTOMERS))
        )
        orders.append(
            (
                i,
                cid,
                decimal.Decimal(rnd.randint(1, 100_000)) / 100,
                dt.datetime(2025, 2, 1) + dt.timedelta(minutes=i),
            )
        )
    items = [
        (i, rnd.randint(1, N_ORDERS + 20), f"sku-{rnd.randint(1, 40):03d}", rnd.randint(1, 9))
        for i in range(1, N_ITEMS + 1)
    ]
    regions = [(r, round(0.5 + k / 10, 2)) for k, r in enumerate(REGIONS)]
    tickets = [
        (
            i,
            customers[rnd.randrange(N_CUSTOMERS)][5]
            if rnd.random() < 0.9
            else uuid.UUID(int=rnd.getrandbits(128)),
            base + dt.timedelta(hours=i, minutes=rnd.randint(0, 59)),
            {"severity": rnd.randint(1, 4)},
        )
        for i in range(1, N_TICKETS + 1)
    ]
    return Data(customers, orders, items, regions, tickets)


def _sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str | uuid.UUID):
        return "'" + str(v).replace("'", "''") + "'"
    if isinstance(v, dict | list):
        return "'" + json.dumps(v).replace("'", "''") + "'"
    if isinstance(v, dt.datetime):
        return f"'{v.isoformat(sep=' ')}'"
    return str(v)


def values_sql(rows: list[tuple[Any, ...]]) -> str:
    return ", ".join("(" + ", ".join(_sql_literal(v) for v in r) + ")" for r in rows)


def expected(reference: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql` over the reference tables, converted the way results are (Arrow)."""
    return reference.cursor().sql(sql).to_arrow_table().to_pylist()


def same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(repr(_norm(v)) for v in row.values())

    return sorted(map(key, got)) == sorted(map(key, want))


def _norm(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(v, decimal.Decimal):
        return v.normalize()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, float):  # sums in another order differ in the last bits
        return round(v, 6)
    return v


@dataclass
class Calls:
    """What a recording connector saw: (time, kind, statement text, link filter)."""

    events: list[tuple[float, str, str, LinkFilter | None]] = field(default_factory=list)

    def links(self) -> list[LinkFilter]:
        return [e[3] for e in self.events if e[3] is not None]

    def streams(self) -> list[tuple[float, str, str, LinkFilter | None]]:
        return [e for e in self.events if e[1] == "stream"]


def recording(connector: Connector, calls: Calls) -> Connector:
    """The real connector, wrapped in a subclass that records each native query and link."""

    base = type(connector)

    class Recording(base):  # type: ignore[misc, valid-type]
        def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
            out = super().with_link(statement, link)
            calls.events.append((time.perf_counter(), "with_link", out.text, link))
            return out

        def stream(self, statement: Statement) -> Any:
            calls.events.append((time.perf_counter(), "stream", statement.text, None))
            return super().stream(statement)

    connector.__class__ = Recording
    return connector


DIALECTS = {"pg": "postgres", "my": "mysql", "lite": "sqlite", "duck": "duckdb"}


def checked_plan(
    query: FederatedQuery, steps: Mapping[str, CheckedStep], connectors: Mapping[str, object]
) -> CheckedPlan:
    """The checked plan the service would build (the DAG validated here, as it does), with
    `steps` as the pipeline's outcome: a step missing from them was stripped."""
    # a stripped step needs no connector; its database was validated by the caller
    known = set(connectors) | {s.database for s in query.steps if s.step_id not in steps}
    return CheckedPlan(
        query,
        build_plan(query, known),
        CheckRequest(steps=list(query.steps)),
        SafetyOutcome(steps=list(steps.values())),
    )


def checked(
    query: FederatedQuery, *, row_cap: int | None = 100_000, timeout: float = 30.0, **caps: int
) -> dict[str, CheckedStep]:
    """CheckedSteps as the pipeline would return them, the text unchanged (tests only)."""
    return {
        s.step_id: CheckedStep(
            spec=s,
            language="sql",
            dialect=DIALECTS.get(s.database, "postgres"),
            operation="SELECT",
            rewrite=Rewrite(text=s.query, row_cap=caps.get(s.step_id, row_cap)),
            timeout=timeout,
        )
        for s in query.steps
    }
