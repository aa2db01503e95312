"""Every catalog figure says where it comes from and whether it is exact or an estimate,
and its values are formatted as query results are (ISO-8601 timestamps)."""

from __future__ import annotations

import re

import anyio
import pytest

from connectors import registry
from connectors.base import Connector, TableInfo
from connectors.registry import database_config
from tests.connectors.conftest import Backend
from tests.servers import PgServer

FIGURES = ("distinct_count", "null_fraction", "sample_values", "min_value", "max_value")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
# (distinct_count exact, min_value exact) per database, for a 41-row table
EXACT = {
    "postgresql": (False, False),  # pg_stats: ANALYZE samples the table
    "mysql": (False, True),  # index cardinality is estimated; MIN()/MAX() are read
    "sqlite": (True, True),  # the whole table fits the sample: counted
    "toydb": (True, True),
    "duckdb": (False, True),  # approx_count_distinct (HyperLogLog), min() over the table
}


async def test_figures_are_labelled_and_formatted(connector: Connector, backend: Backend) -> None:
    tables = {t.name: t for t in await connector.discover()}
    items = tables["items"]
    assert items.row_count_source is not None and items.row_count_source.source
    dist = {f.name: f.distribution for f in items.fields}["id"]
    assert dist is not None
    present = [f for f in FIGURES if getattr(dist, f) not in (None, [])]
    assert present and set(present) <= set(dist.sources), (present, dist.sources)
    distinct_exact, min_exact = EXACT[backend.kind]
    assert dist.sources["distinct_count"].exact is distinct_exact
    assert dist.sources["min_value"].exact is min_exact
    for f in items.fields:
        d = f.distribution
        if d is None or not f.data_type.startswith("TIMESTAMP"):
            continue
        for value in (d.min_value, d.max_value, *d.sample_values):
            assert value is None or ISO.match(value), (f.name, value)


@pytest.mark.postgres
def test_postgres_timestamps_from_pg_stats_are_iso(pg_server: PgServer) -> None:
    pg_server.run(
        "DROP TABLE IF EXISTS ts_stats",
        "CREATE TABLE ts_stats (at timestamptz, d date)",
        "INSERT INTO ts_stats SELECT '2024-05-06 07:08:09+00'::timestamptz "
        "+ g * interval '1 hour', '2024-01-01'::date + g FROM generate_series(1, 50) g",
        "ANALYZE ts_stats",
    )

    async def discover() -> list[TableInfo]:
        conn = registry.create(database_config(name="pg", type="postgresql", dsn=pg_server.dsn))
        await conn.open()
        try:
            return await conn.discover()
        finally:
            await conn.close()

    tables = {t.name: t for t in anyio.run(discover)}
    fields = {f.name: f.distribution for f in tables["ts_stats"].fields}
    at, day = fields["at"], fields["d"]
    assert at is not None and day is not None
    assert at.min_value == "2024-05-06T08:08:09Z" and at.max_value == "2024-05-08T09:08:09Z"
    assert day.min_value == "2024-01-02" and day.max_value == "2024-02-20"
    assert at.sources["min_value"].exact is False
    pg_server.run("DROP TABLE ts_stats")
