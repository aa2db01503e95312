"""MCP over both transports, with clients no one here wrote: the official SDK's `Client`
over streamable HTTP (a real `sluice serve`, bearer tokens on) and over stdio (a real
`sluice mcp` child process), and the MCP Inspector's CLI (npm), installed on first use into
a folder of the repo's own.

The databases are the tests' own: a PostgreSQL database (a 2,500-row `events` table to page,
a `secrets` table no principal may read) and the SQLite/DuckDB files of tests/api."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import Server, make_files, start_server, stop_server
from tests.servers import PgServer, fresh_pg

ANALYST = "analyst-" + "a" * 24  # reads pg (not secrets) and lite
LIMITED = "limited-" + "l" * 24  # the analyst's grants, 5 requests a minute
OTHER = "other-" + "o" * 26  # the analyst's grants, another principal
EVENTS = 2_500
INLINE_ROWS = 40
REPO = Path(__file__).resolve().parents[2]

# The Inspector's CLI, pinned; installed with npm into a git-ignored folder of the repo.
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
NPM_PREFIX = REPO / ".cache" / "mcp-inspector"

PG_SETUP = [
    "DROP TABLE IF EXISTS events, secrets",
    "CREATE TABLE events (id int PRIMARY KEY, person_id int NOT NULL, kind text NOT NULL, "
    "amount numeric(10,2) NOT NULL)",
    f"INSERT INTO events SELECT g, 1 + g % 3, 'kind ' || (g % 7), g * 0.25 "
    f"FROM generate_series(1, {EVENTS}) g",
    "CREATE TABLE secrets (id int PRIMARY KEY, token text)",
    "INSERT INTO secrets VALUES (1, 'hunter2')",
    "ANALYZE",
]


def config_text(pg: PgServer, lite: Path, duck: Path, data_dir: Path) -> str:
    grants = """\
      pg:
        level: R
        tables:
          secrets: none
      lite: {level: R}
      duck: {level: R}"""
    return f"""\
databases:
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
  - name: lite
    type: sqlite
    path: {lite}
  - name: duck
    type: duckdb
    path: {duck}
auth:
  tokens:
    - token: {ANALYST}
      principal: analyst
    - token: {LIMITED}
      principal: limited
      requests_per_minute: 5
    - token: {OTHER}
      principal: other
permissions:
  default:
    lite: {{level: R}}
  principals:
    analyst:
{grants}
    limited:
{grants}
    other:
{grants}
safety:
  max_rows_per_query: 5000
  inline_rows: {INLINE_ROWS}
  query_timeout_seconds: 10
server:
  data_dir: {data_dir}
"""


@dataclass
class Env:
    """A server over HTTP, and a config of its own for `sluice mcp` over stdio (its own
    data_dir: its own audit log, result store and run store)."""

    http: Server
    stdio_config: Path
    stdio_data: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.http.url}/mcp"


@pytest.fixture(scope="session")
def mcp_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with fresh_pg() as pg:
        pg.run(*PG_SETUP)
        folder = tmp_path_factory.mktemp("mcp")
        lite, duck = make_files(folder / "files")
        stdio_dir = folder / "stdio"
        stdio_dir.mkdir()
        stdio_config = stdio_dir / "sluice.yaml"
        stdio_config.write_text(config_text(pg, lite, duck, stdio_dir / ".sluice"))
        srv = start_server(
            config_text(pg, lite, duck, folder / "http" / ".sluice"), folder / "http"
        )
        try:
            yield Env(srv, stdio_config, stdio_dir / ".sluice")
        finally:
            stop_server(srv)


def audit_lines(data_dir: Path) -> list[dict]:
    path = data_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def http_client(env: Env, token: str | None = ANALYST) -> AsyncIterator[object]:
    """The SDK's Client over streamable HTTP, sending `token` as the bearer token."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(env.mcp_url, http_client=http)) as client:
            yield client


@contextlib.asynccontextmanager
async def stdio_client(env: Env, token: str | None = ANALYST) -> AsyncIterator[object]:
    """The SDK's Client over stdio: it starts `sluice mcp` as its child process."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sluice.cli", "mcp", "--config", str(env.stdio_config)],
        env={**os.environ, "SLUICE_TOKEN": token or ""},
        cwd=str(env.stdio_config.parent),
    )
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


CLIENTS = {"http": http_client, "stdio": stdio_client}


@pytest.fixture(params=sorted(CLIENTS))
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def inspector() -> Path:
    """The Inspector's launcher, npm-installed into .cache/ on first use. No npm, or a failed
    install, fails the tests that need it: they are never skipped."""
    binary = NPM_PREFIX / "node_modules" / ".bin" / "mcp-inspector"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # a clean CI machine (root, Debian): Node.js and npm from apt
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nodejs", "npm"],
            capture_output=True,
            timeout=900,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the MCP Inspector tests need Node.js and npm")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        [npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", INSPECTOR],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if got.returncode != 0 or not binary.exists():
        pytest.fail(f"npm install {INSPECTOR} failed ({got.returncode}):\n{got.stderr[-3000:]}")
    return binary
