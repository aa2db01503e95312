"""MariaDB quirks: KILL QUERY on cancellation, server-side max_statement_time, text JSON."""

from __future__ import annotations

import anyio
import pytest

from connectors.base import Statement
from connectors.errors import QueryTimedOut
from connectors.mysql import MySQLConnector
from connectors.registry import database_config

pytestmark = pytest.mark.mysql


@pytest.fixture
async def maria(mysql_server):  # type: ignore[no-untyped-def]
    conn = MySQLConnector(
        database_config(
            name="maria",
            type="mysql",
            host=mysql_server.host,
            port=mysql_server.port,
            user=mysql_server.user,
            password=mysql_server.password or None,
            database=mysql_server.database,
            pool_size=2,
        )
    )
    await conn.open()
    yield conn
    await conn.close()


def _running(mysql_server, marker: str) -> list:  # type: ignore[no-untyped-def]
    return mysql_server.run(
        "SELECT ID, COMMAND, INFO FROM information_schema.PROCESSLIST "
        f"WHERE INFO LIKE '%{marker}%' AND INFO NOT LIKE '%PROCESSLIST%' AND COMMAND = 'Query'"
    )


async def _wait_idle(mysql_server, marker: str) -> list:  # type: ignore[no-untyped-def]
    rows: list = []
    for _ in range(20):
        rows = await anyio.to_thread.run_sync(_running, mysql_server, marker)
        if not rows:
            break
        await anyio.sleep(0.05)
    return rows


@pytest.mark.parametrize("bulk", [False, True], ids=["rows", "arrow"])
async def test_cancel_kills_the_server_query(maria, mysql_server, bulk: bool) -> None:
    marker = f"cancel_me_{int(bulk)}"
    with anyio.move_on_after(0.3):
        async for _ in maria.stream(
            Statement(f"SELECT SLEEP(30) AS {marker}", timeout=60, bulk=bulk)
        ):
            pass
    assert await _wait_idle(mysql_server, marker) == []
    batch = [b async for b in maria.stream(Statement("SELECT 41 + 1 AS x"))][0]
    assert batch.rows == [(42,)]


async def test_max_statement_time_is_the_server_timeout(maria, mysql_server) -> None:
    with pytest.raises(QueryTimedOut):
        async for _ in maria.stream(Statement("SELECT SLEEP(30) AS slow_one", timeout=0.4)):
            pass
    assert await _wait_idle(mysql_server, "slow_one") == []


async def test_early_stop_does_not_poison_the_pool(maria) -> None:
    sql = "SELECT seq FROM seq_1_to_100000"  # MariaDB's sequence engine
    for _ in range(3):  # more than pool_size: unread cursors are closed, not reused
        batches = [b async for b in maria.stream(Statement(sql, batch_size=100, max_rows=250))]
        assert sum(len(b) for b in batches) == 250
    batch = [b async for b in maria.stream(Statement("SELECT 1 AS one"))][0]
    assert batch.rows == [(1,)]


async def test_json_and_uuid_arrive_as_text(maria, mysql_server) -> None:
    batch = [
        b
        async for b in maria.stream(
            Statement("SELECT JSON_OBJECT('a', 1) AS j, UUID() AS u, CAST(1 AS UNSIGNED) AS big")
        )
    ][0]
    j, u, _big = batch.rows[0]
    assert isinstance(j, str) and isinstance(u, str) and len(u) == 36
    assert [c.type for c in batch.columns][:2] == ["VARCHAR", "VARCHAR"]
