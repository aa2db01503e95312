"""PostgreSQL: asyncpg pool for rows (dashboards), ADBC in a worker thread for Arrow (bulk).

Row path. Pool connections start with `default_transaction_read_only=on` and the configured
`statement_timeout`, so a small read (max_rows known and <= batch_size) is one round trip,
exactly like `pool.fetch`: one prepared statement from the pool's statement cache, executed
with a row limit on the portal (asyncpg's `_execute(limit=)`, the call `fetchrow` uses).
Bigger reads run in an explicit `BEGIN READ ONLY` transaction with `SET LOCAL
statement_timeout` and a portal cursor fetched `batch_size` rows at a time. Writes run in
`BEGIN READ WRITE ... COMMIT`. When the caller is cancelled asyncpg sends the server a cancel
request; a connection left in a bad state is terminated rather than reused.

Bulk path. ADBC (libpq) returns Arrow record batches without a Python object per value; it
runs in a worker thread and is interrupted with `adbc_cancel()` on cancellation. ADBC takes
PostgreSQL's own `$n` placeholders and binds Python lists as arrays, but has no codec for
UUID/Decimal values, so those are sent as text and cast by the `$n::type[]` in the SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import anyio
import asyncpg

from connectors import pg_discovery
from connectors.base import Batch, Column, LinkFilter, PoolStats, Statement, TableInfo
from connectors.config import DatabaseConfig, ServerSettings
from connectors.errors import (
    ConnectorUnavailable,
    QueryFailed,
    QueryRejected,
    QueryTimedOut,
    statement_at_fault,
)
from connectors.pg_arrow import AdbcPool, arrow_batches
from connectors.sql_link import apply_link
from connectors.types_map import pg_type, unique_names

DEFAULT_TIMEOUT_S = 30.0
# the client-side deadline trails the server's statement_timeout so the server stops first
CLIENT_GRACE_S = 1.0
COLUMN_CACHE_SIZE = 2048
# parameter types a Python str binds to exactly as the same string literal would be read
_STRING_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
STATEMENT_CACHE_SIZE = 1024
_STATEMENT_TIMEOUT = re.compile(r"statement timeout", re.I)


class PostgresSettings(ServerSettings, tag="postgresql", frozen=True):
    """Where this connector connects (`type: postgresql` in sluice.yaml)."""

    def default_schemas(self) -> tuple[str, ...]:
        return ("public",)


class PostgresConnector:
    """PostgreSQL through asyncpg (rows) and ADBC (Arrow)."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (PostgresSettings,)
    language: ClassVar[str] = "sql"
    dialect: ClassVar[str] = "postgres"
    param_style: ClassVar[str] = "dollar"

    def __init__(self, config: PostgresSettings) -> None:
        self.config = config
        self._pool: asyncpg.Pool | None = None
        self._adbc: AdbcPool | None = None
        self._columns: dict[str, list[Column]] = {}
        self._string_binds: dict[str, bool] = {}  # text -> its str parameters bind as given
        # connections whose last use left no session state behind (see _reset)
        self._clean: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S

    # -- lifecycle -------------------------------------------------------------------------

    def _connect_args(self) -> dict[str, Any]:
        c = self.config
        if c.dsn:
            return {"dsn": c.dsn}
        return {
            "host": c.host or "127.0.0.1",
            "port": c.port or 5432,
            "database": c.database,
            "user": c.user,
            "password": c.password,
        }

    def adbc_uri(self) -> str:
        """The libpq URI ADBC connects with (same target as the asyncpg pool)."""
        c = self.config
        if c.dsn:
            return c.dsn
        auth = quote(c.user or "postgres", safe="")
        if c.password:
            auth += ":" + quote(c.password, safe="")
        host = c.host or "127.0.0.1"
        database = quote(c.database or "", safe="")
        if host.startswith("/"):  # a unix socket folder goes in the query string, not the host
            return f"postgresql://{auth}@/{database}?host={quote(host)}&port={c.port or 5432}"
        return f"postgresql://{auth}@{host}:{c.port or 5432}/{database}"

    async def open(self) -> None:
        if self._pool is not None:
            return
        c = self.config
        settings = {
            "application_name": "sluice",
            # every implicit transaction on these connections is read-only; writes say
            # BEGIN READ WRITE explicitly
            "default_transaction_read_only": "on",
            "statement_timeout": str(int(self._default_timeout * 1000)),
        }
        try:
            with anyio.fail_after(c.connect_timeout_seconds + 1):
                self._pool = await asyncpg.create_pool(
                    **self._connect_args(),
                    min_size=1,
                    max_size=c.pool_size,
                    timeout=c.connect_timeout_seconds,
                    command_timeout=None,
                    # dashboards repeat many distinct texts (one per key they look up):
                    # asyncpg's default of 100 prepared statements per connection made
                    # every lookup of a 1,000-key working set parse and plan anew
                    statement_cache_size=STATEMENT_CACHE_SIZE,
                    server_settings=settings,
                    init=_init_connection,
                    reset=self._reset,
                )
        except TimeoutError as exc:
            raise ConnectorUnavailable(
                c.name, f"no answer within {c.connect_timeout_seconds:g}s"
            ) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConnectorUnavailable(c.name, f"cannot connect: {exc}") from exc
        self._adbc = AdbcPool(self.adbc_uri(), size=c.pool_size, settings=settings)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        adbc, self._adbc = self._adbc, None
        if pool is not None:
            with anyio.move_on_after(10) as scope:
                await pool.close()
            if scope.cancelled_caught:
                pool.terminate()
        if adbc is not None:
            await anyio.to_thread.run_sync(adbc.close)

    async def _reset(self, conn: asyncpg.Connection) -> None:
        """asyncpg resets every connection it takes back (`RESET ALL`, `CLOSE ALL`,
        `UNLISTEN *`, advisory unlocks: a round trip, ~15% of a lookup's CPU in bench/). A
        read-only one-round-trip query at the default timeout outside a transaction changes
        none of that (a function with side effects is refused as a write by the safety
        pipeline, and a write never takes this path), so that connection goes back as it is.
        asyncpg has already rolled back any open transaction before calling this."""
        if conn in self._clean:
            self._clean.discard(conn)
            return
        await conn.reset()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._pool

    async def ping(self) -> None:
        pool = self._require_pool()
        try:
            with anyio.fail_after(self.config.connect_timeout_seconds):
                await pool.fetchval("SELECT 1")
        except TimeoutError as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConnectorUnavailable(self.config.name, f"ping failed: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncGenerator[Batch, None]:
        # aclosing on every nested generator: one abandoned by an early stop is otherwise
        # closed by asyncio's finaliser in another task, which then releases limiters and
        # connections it does not hold ("this borrower isn't holding any ... tokens")
        if statement.bulk:
            async with contextlib.aclosing(self._stream_bulk(statement)) as bulk:
                async for batch in bulk:
                    yield batch
            return
        pool = self._require_pool()
        # the loop's clock, which anyio.current_time() reads too, without asking sniffio
        deadline = asyncio.get_running_loop().time() + statement.timeout + CLIENT_GRACE_S
        small = statement.max_rows is not None and statement.max_rows <= statement.batch_size
        if small and statement.readonly:
            # the dashboard path: one asyncio deadline around acquire and query (anyio's
            # scopes were ~10% of a lookup's CPU in bench/, asyncio's costs half of one), one
            # shielded scope for the release
            try:
                async with asyncio.timeout_at(deadline):
                    with self._mapped(statement):
                        conn = await pool.acquire()
                        try:
                            if statement.timeout != self._default_timeout:
                                await conn.execute(_set_timeout(statement.timeout, local=False))
                            text, params = await self._bindable(conn, statement)
                            columns = await self._columns_of(conn, text)
                            records = await conn._execute(
                                text, tuple(params), statement.max_rows, None
                            )
                            if statement.timeout == self._default_timeout:
                                self._clean.add(conn._con)  # the connection behind the proxy
                        finally:
                            await _release(pool, conn)
            except TimeoutError:
                raise QueryTimedOut(self.config.name, statement.timeout) from None
            yield Batch(columns, rows=[tuple(r) for r in records])
            return
        async with (
            self._acquire(pool, statement, deadline) as conn,
            contextlib.aclosing(self._stream_cursor(conn, statement, deadline)) as batches,
        ):
            async for batch in batches:
                yield batch

    async def _stream_cursor(
        self, conn: Any, statement: Statement, deadline: float
    ) -> AsyncGenerator[Batch, None]:
        limit = statement.max_rows
        mode = "READ ONLY" if statement.readonly else "READ WRITE"
        try:
            with self._errors(statement, deadline):
                # before BEGIN: a statement that fails to prepare would abort the transaction
                text, params = await self._bindable(conn, statement)
                await conn.execute(f"BEGIN {mode}; {_set_timeout(statement.timeout, local=True)}")
                cursor = await conn.cursor(text, *params)
                columns = self._columns_from_state(text, cursor._state)
            sent = 0
            while limit is None or sent < limit:
                want = (
                    statement.batch_size
                    if limit is None
                    else min(statement.batch_size, limit - sent)
                )
                with self._errors(statement, deadline):
                    records = await cursor.fetch(want)
                if records:
                    sent += len(records)
                    yield Batch(columns, rows=[tuple(r) for r in records])
                if len(records) < want:
                    break
            if sent == 0:
                yield Batch(columns, rows=[])
            if not statement.readonly:
                with self._errors(statement, deadline):
                    await conn.execute("COMMIT")
        finally:
            await _rollback(conn)

    @contextlib.asynccontextmanager
    async def _acquire(
        self, pool: asyncpg.Pool, statement: Statement, deadline: float
    ) -> AsyncIterator[Any]:
        with self._errors(statement, deadline):
            conn = await pool.acquire()
        try:
            yield conn
        finally:
            await _release(pool, conn)

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        """Map driver errors (and the client-side deadline) onto connector errors."""
        with anyio.CancelScope(deadline=deadline) as scope, self._mapped(statement):
            yield
        if scope.cancelled_caught:
            raise QueryTimedOut(self.config.name, statement.timeout)

    @contextlib.contextmanager
    def _mapped(self, statement: Statement) -> Iterator[None]:
        """Driver errors as connector errors."""
        db = self.config.name
        try:
            yield
        except asyncpg.QueryCanceledError as exc:
            if _STATEMENT_TIMEOUT.search(str(exc)):
                raise QueryTimedOut(db, statement.timeout) from exc
            raise QueryFailed(db, _message(exc)) from exc
        except asyncpg.PostgresError as exc:
            raise failure(db, exc) from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            raise QueryFailed(db, str(exc)) from exc
        except (OSError, ConnectionError) as exc:
            raise ConnectorUnavailable(db, f"connection lost: {exc}") from exc

    async def _bindable(self, conn: Any, statement: Statement) -> tuple[str, Sequence[Any]]:
        """The text and parameters to run: `statement.inline` unless every str parameter has
        a type that takes a Python str (a string key compared with a date or an integer
        column gets that column's type, which asyncpg would refuse a str for)."""
        if statement.inline is None or not any(isinstance(p, str) for p in statement.params):
            return statement.text, statement.params
        ok = self._string_binds.get(statement.text)
        if ok is None:
            try:
                state = await conn._get_statement(statement.text, None)
            except asyncpg.PostgresError:
                ok = False  # the inline text gets its own answer (or its own error)
            else:
                types = state._get_parameters()
                ok = all(
                    t.name in _STRING_TYPES
                    for t, p in zip(types, statement.params, strict=True)
                    if isinstance(p, str)
                )
            if len(self._string_binds) >= COLUMN_CACHE_SIZE:
                self._string_binds.clear()
            self._string_binds[statement.text] = ok
        return (statement.text, statement.params) if ok else (statement.inline, ())

    async def _columns_of(self, conn: Any, text: str) -> list[Column]:
        cached = self._columns.get(text)
        if cached is not None:
            return cached
        state = await conn._get_statement(text, None)
        return self._columns_from_state(text, state)

    def _columns_from_state(self, text: str, state: Any) -> list[Column]:
        cached = self._columns.get(text)
        if cached is not None:
            return cached
        attrs = state._get_attributes()
        names = unique_names(a.name for a in attrs)
        columns = [Column(n, pg_type(a.type.name)) for n, a in zip(names, attrs, strict=True)]
        if len(self._columns) >= COLUMN_CACHE_SIZE:
            self._columns.clear()
        self._columns[text] = columns
        return columns

    async def _stream_bulk(self, statement: Statement) -> AsyncGenerator[Batch, None]:
        self._require_pool()
        assert self._adbc is not None
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        batches = arrow_batches(
            self._adbc,
            statement,
            _adbc_params(statement.params),
            deadline,
            database=self.config.name,
        )
        async with contextlib.aclosing(batches) as closing:
            async for batch in closing:
                yield batch

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        pool = self._require_pool()
        deadline = anyio.current_time() + statement.timeout + CLIENT_GRACE_S
        async with self._acquire(pool, statement, deadline) as conn:
            try:
                with self._errors(statement, deadline):
                    await conn.execute(
                        f"BEGIN READ WRITE; {_set_timeout(statement.timeout, local=True)}"
                    )
                    status = await conn.execute(statement.text, *statement.params)
                    await conn.execute("COMMIT")
            finally:
                await _rollback(conn)
        return _rows_affected(status)

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        pool = self._require_pool()
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        async with self._acquire(pool, statement, deadline) as conn:
            with self._errors(statement, deadline):
                return await pg_discovery.discover(conn)

    def pool_stats(self) -> PoolStats | None:
        pool = self._pool
        if pool is None:
            return None
        size = pool.get_size()
        return PoolStats(in_use=size - pool.get_idle_size(), size=pool.get_max_size())

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, dialect=self.dialect, param_style=self.param_style)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON arrives as Python values, as the other connectors give it
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
        )


async def _release(pool: asyncpg.Pool, conn: Any) -> None:
    """Back to the pool even while cancelled (shielded, 10 s at most); a connection that
    cannot be released is terminated, never leaked."""
    with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 10) as scope:
        try:
            await pool.release(conn)
        except Exception:  # a broken connection must not leak out of cleanup
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()


async def _rollback(conn: Any) -> None:
    """End the transaction, if any, even while cancelled; a connection that cannot is killed."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(5):
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
        except Exception:  # the connection is unusable: drop it, never reuse it dirty
            conn.terminate()


def _set_timeout(seconds: float, *, local: bool) -> str:
    scope = "LOCAL " if local else ""
    return f"SET {scope}statement_timeout = {max(1, int(seconds * 1000))}"


def failure(db: str, exc: Any) -> QueryFailed:
    """The connector error for a PostgreSQL error: QueryRejected (400, message, detail and
    HINT kept) when the statement is at fault, else QueryFailed."""
    sqlstate = getattr(exc, "sqlstate", None)
    if statement_at_fault(sqlstate):
        return QueryRejected(
            db,
            getattr(exc, "message", None) or str(exc),
            detail=getattr(exc, "detail", None),
            hint=getattr(exc, "hint", None),
            sqlstate=sqlstate,
        )
    return QueryFailed(db, _message(exc))


def _message(exc: asyncpg.PostgresError) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    detail = getattr(exc, "detail", None)
    return f"{msg} ({detail})" if detail else msg


def _rows_affected(status: str) -> int:
    # "INSERT 0 3", "UPDATE 2", "DELETE 1", "SELECT 5"; DDL has no count
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


def _adbc_params(params: Sequence[Any]) -> tuple[Any, ...]:
    def conv(v: Any) -> Any:
        if isinstance(v, uuid.UUID | Decimal):
            return str(v)
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v

    return tuple(conv(p) for p in params)
