"""PostgreSQL quirks: the server really stops cancelled statements, typmods, the fast path."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest

from connectors.base import Statement
from connectors.errors import QueryTimedOut
from connectors.postgres import PostgresConnector
from connectors.registry import database_config

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(pg_server):  # type: ignore[no-untyped-def]
    conn = PostgresConnector(
        database_config(name="pg", type="postgresql", dsn=pg_server.dsn, pool_size=2)
    )
    await conn.open()
    yield conn
    await conn.close()


def _running(pg_server, marker: str) -> list:  # type: ignore[no-untyped-def]
    return pg_server.run(
        "SELECT pid, state, query FROM pg_stat_activity WHERE state = 'active' "
        f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    )


async def _wait_idle(pg_server, marker: str) -> list:  # type: ignore[no-untyped-def]
    for _ in range(20):  # the cancel request is asynchronous: allow it a moment
        rows = await anyio.to_thread.run_sync(_running, pg_server, marker)
        if not rows:
            return rows
        await anyio.sleep(0.05)
    return rows


@pytest.mark.parametrize("bulk", [False, True], ids=["asyncpg", "adbc"])
@pytest.mark.parametrize("small", [False, True], ids=["cursor", "single-fetch"])
async def test_cancel_stops_the_server_query(pg, pg_server, bulk: bool, small: bool) -> None:
    marker = f"cancel_{int(bulk)}_{int(small)}"
    sql = f"SELECT pg_sleep(30) AS {marker}"
    st = Statement(sql, timeout=60, bulk=bulk, max_rows=10 if small else None)
    with anyio.move_on_after(0.3):
        async for _ in pg.stream(st):
            pass
    assert (
        await anyio.to_thread.run_sync(_running, pg_server, marker) == []
        or await _wait_idle(pg_server, marker) == []
    )
    rows = [b async for b in pg.stream(Statement("SELECT 41 + 1 AS x", bulk=bulk))]
    got = rows[0].rows[0][0] if rows[0].rows is not None else rows[0].arrow.column(0)[0].as_py()
    assert got == 42


@pytest.mark.parametrize("bulk", [False, True], ids=["asyncpg", "adbc"])
async def test_statement_timeout_is_set_on_the_server(pg, pg_server, bulk: bool) -> None:
    marker = f"timeout_{int(bulk)}"
    with pytest.raises(QueryTimedOut):
        async for _ in pg.stream(
            Statement(f"SELECT pg_sleep(30) AS {marker}", timeout=0.4, bulk=bulk)
        ):
            pass
    assert await _wait_idle(pg_server, marker) == []


async def test_connections_come_back_read_only_and_clean(pg) -> None:
    # after a write the next read still runs in a read-only transaction with the default
    # statement_timeout (RESET ALL on release)
    await pg.execute_write(Statement("CREATE TABLE IF NOT EXISTS q_clean (a int)", readonly=False))
    # a per-statement timeout on the single-fetch path is a session SET: it must not stick
    batch = [
        b
        async for b in pg.stream(
            Statement("SELECT current_setting('statement_timeout') AS st", max_rows=2, timeout=7)
        )
    ][0]
    assert batch.rows == [("7s",)]
    for _ in range(3):
        batch = [
            b
            async for b in pg.stream(
                Statement(
                    "SELECT current_setting('transaction_read_only') AS ro, "
                    "current_setting('statement_timeout') AS st",
                    max_rows=2,
                )
            )
        ][0]
        assert batch.rows == [("on", "30s")]
    await pg.execute_write(Statement("DROP TABLE q_clean", readonly=False))


async def test_numeric_typmod_and_schema_names(pg, pg_server) -> None:
    await anyio.to_thread.run_sync(
        pg_server.run,
        "CREATE SCHEMA IF NOT EXISTS sales",
        "CREATE TABLE IF NOT EXISTS sales.prices (id int PRIMARY KEY, "
        "exact numeric(20,6), loose numeric)",
        "INSERT INTO sales.prices VALUES (1, 12345678901234.123456, 3.14159265358979) "
        "ON CONFLICT DO NOTHING",
    )
    rows = [b async for b in pg.stream(Statement("SELECT exact, loose FROM sales.prices"))]
    assert rows[0].rows == [(Decimal("12345678901234.123456"), Decimal("3.14159265358979"))]
    assert [c.type for c in rows[0].columns] == ["DECIMAL(38,10)", "DECIMAL(38,10)"]
    bulk = [
        b async for b in pg.stream(Statement("SELECT exact, loose FROM sales.prices", bulk=True))
    ]
    assert [c.type for c in bulk[0].columns] == ["DECIMAL(20,6)", "DECIMAL(38,10)"]
    assert bulk[0].arrow.to_pylist() == [
        {"exact": Decimal("12345678901234.123456"), "loose": Decimal("3.1415926536")}
    ]
    tables = {t.name: t for t in await pg.discover()}
    fields = {f.name: f for f in tables["sales.prices"].fields}
    assert fields["exact"].data_type == "DECIMAL(20,6)"
    assert fields["loose"].data_type == "DECIMAL(38,10)"
    await anyio.to_thread.run_sync(pg_server.run, "DROP SCHEMA sales CASCADE")


async def test_link_values_beyond_one_batch_as_one_array(pg, pg_server) -> None:
    await anyio.to_thread.run_sync(
        pg_server.run,
        "CREATE TABLE IF NOT EXISTS many (id bigint PRIMARY KEY, v text)",
        "INSERT INTO many SELECT g, 'v' || g FROM generate_series(1, 5000) g "
        "ON CONFLICT DO NOTHING",
    )
    from connectors.base import LinkFilter

    wanted = list(range(2, 5001, 2))
    st = pg.with_link(
        Statement("SELECT id, v FROM many", batch_size=500), LinkFilter("id", wanted, "BIGINT")
    )
    assert len(st.params) == 1
    batches = [b async for b in pg.stream(st)]
    assert max(len(b) for b in batches) <= 500 and len(batches) == 5
    assert sorted(r[0] for b in batches for r in b.rows) == wanted
    await anyio.to_thread.run_sync(pg_server.run, "DROP TABLE many")


@pytest.mark.parametrize("small", [False, True], ids=["cursor", "single-fetch"])
async def test_a_string_parameter_binds_only_where_its_column_takes_a_str(
    pg, pg_server, small: bool
) -> None:
    """Statement templates bind inert string keys as untyped `$n` parameters: PostgreSQL
    types them from the column, as it types the literal. A text column runs the bound
    statement; a date, integer or uuid column runs the inline text that was checked, and
    both give the rows the literal would."""
    pool = pg._require_pool()
    setup = [
        "DROP TABLE IF EXISTS str_keys",
        "CREATE TABLE str_keys (id int, name text, tag varchar(10), day date, uid uuid)",
        "INSERT INTO str_keys VALUES (1, 'it''s', 'a', '2025-01-02', "
        "'00000000-0000-0000-0000-000000000001'), (2, 'b', 'b', '2025-01-03', "
        "'00000000-0000-0000-0000-000000000002')",
    ]
    await anyio.to_thread.run_sync(pg_server.run, *setup)
    max_rows = 10 if small else None
    cases = [
        ("name", "it's", "'it''s'", True),
        ("tag", "b", "'b'", True),
        ("day", "2025-01-03", "'2025-01-03'", False),
        ("id", "1", "'1'", False),
        (
            "uid",
            "00000000-0000-0000-0000-000000000002",
            "'00000000-0000-0000-0000-000000000002'",
            False,
        ),
    ]
    for column, value, literal, binds in cases:
        st = Statement(
            f"SELECT id FROM str_keys WHERE {column} = $1",
            params=(value,),
            max_rows=max_rows,
            inline=f"SELECT id FROM str_keys WHERE {column} = {literal}",
        )
        async with pool.acquire() as conn:
            text, params = await pg._bindable(conn, st)
        assert (text == st.text) is binds, column
        assert params == ((value,) if binds else ())
        rows = [r for b in [b async for b in pg.stream(st)] for r in b.rows or []]
        expected = {"name": 1, "tag": 2, "day": 2, "id": 1, "uid": 2}[column]
        assert rows == [(expected,)], column
    await anyio.to_thread.run_sync(pg_server.run, "DROP TABLE str_keys")
