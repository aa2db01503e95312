"""Handles on the real database servers the tests use (shared by every test package)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncmy
import asyncpg


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    database: str

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def run(self, *sql: str) -> list[asyncpg.Record]:
        """Run statements synchronously (fixtures and assertions); returns the last result."""

        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                out: list[asyncpg.Record] = []
                for s in sql:
                    out = await conn.fetch(s)
                return out
            finally:
                await conn.close()

        return asyncio.run(go())


@dataclass(frozen=True)
class MySQLServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    def run(self, *sql: str) -> list[tuple]:
        async def go() -> list[tuple]:
            conn = await asyncmy.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=self.database,
                autocommit=True,
            )
            try:
                out: list[tuple] = []
                async with conn.cursor() as cur:
                    for s in sql:
                        await cur.execute(s)
                        out = list(await cur.fetchall() or [])
                return out
            finally:
                conn.close()

        return asyncio.run(go())
