"""A small asyncpg pool for sluice's own tables in PostgreSQL (the run store, the index of the
shared result store): `?schema=name` in the URL keeps them in their own schema, created if
missing, and the tables are created by one process at a time."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(URL_SCHEMES)


def split_url(url: str) -> tuple[str, str | None]:
    """(the DSN asyncpg connects with, the schema named by `?schema=`)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema", None)
    return urlunsplit(parts._replace(query=urlencode(query))), schema


async def open_pool(
    url: str,
    *,
    pool_size: int,
    tables: str,
    lock_key: int,
    command_timeout: float | None = None,
) -> Any:
    """A pool on `url` whose search_path is its schema, after creating the schema and
    running `tables` (CREATE ... IF NOT EXISTS) under advisory lock `lock_key`, so processes
    starting together do not race on the catalog."""
    import asyncpg

    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
            if schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(tables)
    finally:
        await conn.close()
    settings = {"search_path": schema} if schema else {}
    return await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, server_settings=settings)
