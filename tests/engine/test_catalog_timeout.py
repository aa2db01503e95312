"""A database without its own query_timeout_seconds opens its sessions with the safety
timeout, so a read bounded by that timeout needs no per-statement SET and RESET."""

from __future__ import annotations

import pytest

from connectors.base import Statement
from connectors.postgres import PostgresConnector
from connectors.registry import database_config
from engine.catalog import Catalog

pytestmark = pytest.mark.postgres


async def _session_timeout(catalog: Catalog, name: str) -> str:
    connector = catalog.states[name].connector
    await connector.open()
    try:
        # max_rows keeps the read on the single-fetch path, which sets nothing when the
        # statement's bound is the session's
        statement = Statement(
            "SELECT current_setting('statement_timeout') AS t", timeout=7.0, max_rows=1
        )
        batches = [b async for b in connector.stream(statement)]
        assert batches[0].rows is not None
        return str(batches[0].rows[0][0])
    finally:
        await connector.close()


async def test_the_safety_timeout_is_the_session_default(pg_server) -> None:  # type: ignore[no-untyped-def]
    dbs = [
        database_config(name="plain", type="postgresql", dsn=pg_server.dsn, pool_size=1),
        database_config(
            name="own", type="postgresql", dsn=pg_server.dsn, pool_size=1, query_timeout_seconds=3
        ),
    ]
    catalog = Catalog(dbs, ttl_seconds=60, max_concurrent_queries=2, default_timeout=7.0)
    assert await _session_timeout(catalog, "plain") == "7s"
    # a database's own bound wins for its connector; the catalog keeps its settings as written
    assert catalog.states["plain"].config.query_timeout_seconds is None
    own = catalog.states["own"].connector
    assert isinstance(own, PostgresConnector)
    assert own.config.query_timeout_seconds == 3
