"""A real `sluice serve` (hypercorn) with three principals and tight bounds, over a
PostgreSQL database of its own: the attacker's view of isolation and bounds (issue 11).

`shop` has a 3 s query timeout; `shop_slow` is the same database with the 60 s default
(bob only), for the heavy requests of the latency tests.
alice may read `shop` except `secrets` and the `email` column of `people`; bob may read
all of `shop` but `secrets`; carol may read only `items`; admin holds the admin grant
(every principal's runs and results, audited).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.heavy import PG_SETUP
from tests.api.conftest import Server, start_server, stop_server
from tests.servers import PgServer, fresh_pg

TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "carol": "tok-carol", "admin": "tok-admin"}


def config_text(pg: PgServer, *, extra_server: str = "", extra_limits: str = "") -> str:
    tokens = "\n".join(
        f"    - principal: {p}\n      token: {t}" + ("\n      admin: true" if p == "admin" else "")
        for p, t in TOKENS.items()
    )
    return f"""\
databases:
  - name: shop
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 8
    query_timeout_seconds: 3
  - name: shop_slow
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
    query_timeout_seconds: 60
auth:
  tokens:
{tokens}
permissions:
  principals:
    alice:
      shop:
        level: R
        tables:
          secrets: none
          people: {{level: R, deny_columns: [email]}}
    bob:
      shop:
        level: R
        tables:
          secrets: none
      shop_slow:
        level: R
        tables:
          secrets: none
    carol:
      shop:
        level: none
        tables:
          items: R
    admin:
      shop:
        level: R
safety:
  max_rows_per_query: 2000000
  inline_rows: 100
  query_timeout_seconds: 60
server:
  max_result_bytes: 3000000
  body_limit_bytes: 2000000
{extra_server}limits:
  max_inline_bytes: 20000000
  max_concurrent_requests: 5
  max_concurrent_requests_per_principal: 3
  max_run_seconds: 6
{extra_limits}"""


@dataclass
class Iso:
    server: Server
    pg: PgServer

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, who: str | None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kw)  # type: ignore[arg-type]

    def cpu_seconds(self) -> float:
        """The server process's user+system CPU time (from /proc), to see work go on."""
        fields = Path(f"/proc/{self.server.process.pid}/stat").read_text().rsplit(")", 1)[1]
        parts = fields.split()
        ticks = int(parts[11]) + int(parts[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def busy_seconds(self, window: float) -> float:
        before = self.cpu_seconds()
        time.sleep(window)
        return self.cpu_seconds() - before


def wait_for_discovery(url: str, timeout: float = 30.0) -> None:
    """Until both databases' tables are discovered (a loaded machine takes a while)."""
    headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
        while time.monotonic() < deadline:
            paths = ("/v1/databases/shop/tables/big", "/v1/databases/shop_slow/tables/big")
            if all(c.get(p).status_code == 200 for p in paths):
                return
            time.sleep(0.2)
    raise AssertionError(f"the databases were not discovered within {timeout}s")


@pytest.fixture(scope="session")
def iso_pg() -> Iterator[PgServer]:
    with fresh_pg() as pg:
        pg.run(*PG_SETUP)
        yield pg


@pytest.fixture(scope="session")
def iso(iso_pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Iso]:
    folder = tmp_path_factory.mktemp("iso")
    srv = start_server(config_text(iso_pg), folder)
    try:
        wait_for_discovery(srv.url)
        yield Iso(srv, iso_pg)
    finally:
        stop_server(srv)
