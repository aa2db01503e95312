"""MySQL/MariaDB through an asyncmy pool, streaming with unbuffered server-side cursors.

Reads run in `START TRANSACTION READ ONLY`; every statement carries its own server timeout
(`SET STATEMENT max_statement_time=N FOR ...`, MariaDB). The session time zone is UTC, so
TIMESTAMP columns come back as aware UTC datetimes (TIMESTAMPTZ) and DATETIME as naive
TIMESTAMP. An unbuffered cursor that was not read to its end (max_rows reached, error,
cancellation) cannot be reused: its running statement is stopped with `KILL QUERY` from a
separate connection and the connection is closed instead of going back to the pool.

Quirks: MariaDB sends JSON and UUID columns as plain strings in results (no type in the
protocol metadata asyncmy reads), so they arrive as VARCHAR text; TINYINT(1) is BOOLEAN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar
from urllib.parse import unquote, urlparse

import anyio
import asyncmy
from asyncmy.cursors import SSCursor
from asyncmy.errors import MySQLError

from connectors.arrow_rows import rows_to_arrow
from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, ServerSettings
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryRejected, QueryTimedOut
from connectors.mysql_discovery import discover_mysql
from connectors.sql_link import apply_link
from connectors.types_map import decimal_type, unique_names

CLIENT_GRACE_S = 1.0
ER_STATEMENT_TIMEOUT = 1969
ER_QUERY_INTERRUPTED = 1317
UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 1045, 1049}
BINARY_CHARSET = 63
UNSIGNED_FLAG = 32

# MySQL protocol field types (include/mysql_com.h)
_FIELD_TYPES: dict[int, str] = {
    1: "SMALLINT", 2: "SMALLINT", 3: "INTEGER", 4: "REAL", 5: "DOUBLE", 7: "TIMESTAMPTZ",
    8: "BIGINT", 9: "INTEGER", 10: "DATE", 11: "INTERVAL", 12: "TIMESTAMP", 13: "SMALLINT",
    14: "DATE", 16: "BIGINT", 245: "JSON",
}  # fmt: skip
_STRING_TYPES = {15, 249, 250, 251, 252, 253, 254}


class MySQLSettings(ServerSettings, tag="mysql", frozen=True):
    """Where this connector connects (`type: mysql` in sluice.yaml)."""

    def default_schemas(self) -> tuple[str, ...]:
        # MySQL's schema is the database: `shop.users` in the configured `shop` is `users`
        name = self.display_database
        return (name.lower(),) if name else ()


class MariaDBSettings(MySQLSettings, tag="mariadb", frozen=True):
    """MariaDB speaks the MySQL protocol: `type: mariadb` is the same connector."""


class MySQLConnector:
    """MySQL/MariaDB via asyncmy."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (MySQLSettings, MariaDBSettings)
    language: ClassVar[str] = "sql"
    dialect: ClassVar[str] = "mysql"
    param_style: ClassVar[str] = "format"

    def __init__(self, config: MySQLSettings) -> None:
        self.config = config
        self._pool: Any = None

    def _connect_args(self) -> dict[str, Any]:
        c = self.config
        args: dict[str, Any] = {
            "host": c.host or "127.0.0.1", "port": c.port or 3306, "user": c.user or "root",
            "password": c.password or "", "db": c.database,
        }  # fmt: skip
        if c.dsn:
            u = urlparse(c.dsn)
            args.update(
                host=u.hostname or args["host"], port=u.port or args["port"],
                user=unquote(u.username) if u.username else args["user"],
                password=unquote(u.password) if u.password else args["password"],
                db=u.path.lstrip("/") or args["db"],
            )  # fmt: skip
        args.update(
            connect_timeout=c.connect_timeout_seconds, autocommit=True, charset="utf8mb4",
            init_command="SET time_zone = '+00:00'",
        )  # fmt: skip
        return args

    async def open(self) -> None:
        if self._pool is not None:
            return
        c = self.config
        try:
            with anyio.fail_after(c.connect_timeout_seconds + 1):
                self._pool = await asyncmy.create_pool(
                    minsize=1, maxsize=c.pool_size, pool_recycle=3600, **self._connect_args()
                )
        except TimeoutError as exc:
            raise ConnectorUnavailable(
                c.name, f"no answer within {c.connect_timeout_seconds:g}s"
            ) from exc
        except (MySQLError, OSError) as exc:
            raise ConnectorUnavailable(c.name, f"cannot connect: {_message(exc)}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            with anyio.move_on_after(10):
                await pool.wait_closed()

    def _require(self) -> Any:
        if self._pool is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._pool

    async def ping(self) -> None:
        pool = self._require()
        try:
            with anyio.fail_after(self.config.connect_timeout_seconds):
                async with pool.acquire() as conn, conn.cursor() as cur:
                    await cur.execute("SELECT 1")
                    await cur.fetchall()
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except (MySQLError, OSError) as exc:
            raise ConnectorUnavailable(self.config.name, f"ping failed: {_message(exc)}") from exc

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except MySQLError as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                if code == ER_STATEMENT_TIMEOUT:
                    raise QueryTimedOut(db, statement.timeout) from exc
                if code in UNREACHABLE:
                    raise ConnectorUnavailable(db, _message(exc)) from exc
                if code in REJECTED:
                    raise QueryRejected(db, _message(exc), sqlstate=f"ER {code}") from exc
                raise QueryFailed(db, _message(exc)) from exc
            except OSError as exc:
                raise ConnectorUnavailable(db, f"connection lost: {exc}") from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    @contextlib.asynccontextmanager
    async def _connection(self, statement: Statement, deadline: float) -> AsyncIterator[Any]:
        """A pooled connection; one whose statement may still run is killed and closed."""
        pool = self._require()
        with self._errors(statement, deadline):
            conn = await pool.acquire()
        state = {"clean": False}
        try:
            yield conn, state
        finally:
            with anyio.CancelScope(shield=True):
                if not state["clean"]:
                    await self._kill_query(conn.thread_id())
                    conn.close()
                pool.release(conn)

    async def _kill_query(self, thread_id: int) -> None:
        """Stop a running statement from another connection (the server keeps running it
        after the client walks away otherwise)."""
        with contextlib.suppress(Exception), anyio.fail_after(5):
            args = self._connect_args()
            args.pop("init_command", None)
            conn = await asyncmy.connect(**args)
            try:
                async with conn.cursor() as cur:
                    await cur.execute(f"KILL QUERY {int(thread_id)}")
            finally:
                conn.close()

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        async with self._connection(statement, deadline) as (conn, state):
            cur = conn.cursor(SSCursor)
            mode = "READ ONLY" if statement.readonly else "READ WRITE"
            with self._errors(statement, deadline):
                await cur.execute(f"START TRANSACTION {mode}")
                await cur.execute(_with_timeout(statement), _args(statement))
            columns, fixes = _plan(cur)
            sent = 0
            limit = statement.max_rows
            finished = cur.description is None
            while not finished and (limit is None or sent < limit):
                want = (
                    statement.batch_size
                    if limit is None
                    else min(statement.batch_size, limit - sent)
                )
                with self._errors(statement, deadline):
                    rows = await cur.fetchmany(want)
                if len(rows) < want:
                    finished = True
                if rows:
                    if fixes:
                        rows = _fix(rows, fixes)
                    sent += len(rows)
                    yield _batch(columns, rows, statement.bulk)
            if sent == 0:
                yield _batch(columns, [], statement.bulk)
            if finished:
                with self._errors(statement, deadline):
                    await cur.close()
                    await (conn.rollback() if statement.readonly else conn.commit())
                state["clean"] = True

    async def execute_write(self, statement: Statement) -> int:
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        async with self._connection(statement, deadline) as (conn, state):
            with self._errors(statement, deadline):
                async with conn.cursor() as cur:
                    await cur.execute("START TRANSACTION READ WRITE")
                    try:
                        count = await cur.execute(_with_timeout(statement), _args(statement))
                        await cur.execute("COMMIT")
                    except BaseException:
                        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                            await cur.execute("ROLLBACK")
                        raise
            state["clean"] = True
        return max(int(count or 0), 0)

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=60.0)
        deadline = anyio.current_time() + statement.timeout
        async with self._connection(statement, deadline) as (conn, state):
            with self._errors(statement, deadline):
                tables = await discover_mysql(conn)
            state["clean"] = True
        return tables

    def pool_stats(self) -> PoolStats | None:
        pool = self._pool
        if pool is None:
            return None
        return PoolStats(in_use=pool.size - pool.freesize, size=pool.maxsize)

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, dialect=self.dialect, param_style=self.param_style)


def _with_timeout(statement: Statement) -> str:
    seconds = max(statement.timeout, 0.001)
    return f"SET STATEMENT max_statement_time={seconds:.3f} FOR {statement.text}"


def _args(statement: Statement) -> tuple[Any, ...] | None:
    # no args: the driver must not %-format the text (a literal % stays as written)
    return tuple(statement.params) if statement.params else None


# server error codes that say the statement is wrong (400), not the server: bad field,
# parse error, no such table, ambiguous column, no such function, bad value, NULL into NOT
# NULL, duplicate key, wrong GROUP BY use, data too long, division by zero (strict)
REJECTED = frozenset(
    {1054, 1064, 1146, 1052, 1305, 1366, 1048, 1062, 1055, 1111, 1140, 1406, 1365, 1630}
)


def _message(exc: BaseException) -> str:
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return str(exc.args[1])
    return str(exc)


def _plan(cur: Any) -> tuple[list[Column], dict[int, Any]]:
    """Column types from the protocol's field packets; per-column value fixes (few)."""
    fields = getattr(getattr(cur, "_result", None), "fields", None) or []
    if not cur.description:
        return [], {}
    names = unique_names(d[0] for d in cur.description)
    columns: list[Column] = []
    fixes: dict[int, Any] = {}
    for i, (name, f) in enumerate(zip(names, fields, strict=True)):
        code = f.type_code
        if code in (0, 246):
            signed = 0 if f.flags & UNSIGNED_FLAG else 1
            precision = f.length - (1 if f.scale else 0) - signed
            logical = decimal_type(precision, f.scale)
        elif code == 1 and f.length == 1:
            logical = "BOOLEAN"
            fixes[i] = bool
        elif code in _STRING_TYPES:
            logical = "BLOB" if f.charsetnr == BINARY_CHARSET else "VARCHAR"
        elif code == 8 and f.flags & UNSIGNED_FLAG:
            logical = "HUGEINT"
        else:
            logical = _FIELD_TYPES.get(code, "VARCHAR")
        if logical == "TIMESTAMPTZ":
            fixes[i] = _utc
        columns.append(Column(name, logical))
    return columns, fixes


def _utc(v: Any) -> Any:
    return v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) else v


def _fix(rows: list[tuple[Any, ...]], fixes: dict[int, Any]) -> list[tuple[Any, ...]]:
    out = []
    for row in rows:
        r = list(row)
        for i, fn in fixes.items():
            if r[i] is not None:
                r[i] = fn(r[i])
        out.append(tuple(r))
    return out


def _batch(columns: list[Column], rows: list[tuple[Any, ...]], bulk: bool) -> Batch:
    if bulk:
        return Batch(columns, arrow=rows_to_arrow(columns, rows))
    return Batch(columns, rows=list(rows))
