"""Document-store servers for the whole test session, started by the tests themselves.

- CouchDB API: PouchDB Server 4.2 (npm, installed into `.cache/npm` by `make test-servers`),
  in memory, on a free loopback port. It returns no `bookmark` from `_find` (the connector
  pages with skip), and refuses `$or` containing `$elemMatch` (real CouchDB answers it).
- DynamoDB: moto's server (`moto_server`) as its own process on a free port. Client retries
  are off (one attempt), so a server error fails at once instead of after ~30 s of retries.

A server that cannot start fails the run (never a skip). Each test gets its own database or
table names (a random suffix), so tests don't see each other's data.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server
from tests.servers import PgServer

ROOT = Path(__file__).resolve().parents[2]
POUCHDB_SERVER = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "pouchdb-server"
STARTUP_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(cmd: list[str], url: str, what: str, work: Path) -> Iterator[str]:
    """Run a test server as its own process until the block ends; fail when it won't answer."""
    log = open(work / "server.out", "wb")  # closed in the finally below
    proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}; see {work / 'server.out'}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer within {STARTUP_S:g}s at {url}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def couch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a PouchDB Server started for this session."""
    if not POUCHDB_SERVER.exists():
        pytest.fail(
            f"{POUCHDB_SERVER} is missing: run `make test-servers` (make test does) to install "
            "pouchdb-server from npm"
        )
    work = tmp_path_factory.mktemp("pouchdb")  # it writes config.json and log.txt in its cwd
    port = free_port()
    cmd = [str(POUCHDB_SERVER), "-p", str(port), "-o", "127.0.0.1", "-m", "-n"]
    with serve(cmd, f"http://127.0.0.1:{port}", "pouchdb-server", work) as url:
        yield url


@pytest.fixture
def couch_db() -> str:
    """A fresh CouchDB database name for one test (created by the test's seeding)."""
    return f"sluice_{secrets.token_hex(4)}"


@pytest.fixture
async def couch(couch_url: str, couch_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client on the server, for seeding and checking (the client's own
    answers the connector's results are compared with); the test's database is created
    and dropped here."""
    async with httpx.AsyncClient(base_url=couch_url, timeout=30) as client:
        resp = await client.put(f"/{couch_db}")
        assert resp.status_code in (201, 202), resp.text
        try:
            yield client
        finally:
            await client.delete(f"/{couch_db}")


@pytest.fixture(scope="session")
def dynamo_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:PORT` of moto's DynamoDB server, as its own process (in this one,
    its request threads would share the GIL with the code under test, and a request the
    client abandons leaves a server socket to the garbage collector: a ResourceWarning in
    whichever test runs next)."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the test extra (moto[server,dynamodb])")
    port = free_port()
    cmd = [str(exe), "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve(cmd, f"{url}/moto-api/", "moto_server", tmp_path_factory.mktemp("moto")):
        yield url


DYNAMO_ENV = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


@pytest.fixture
async def dynamo(dynamo_endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client on the moto server, for seeding and checking."""
    from aiobotocore.config import AioConfig

    from connectors.dynamodb import _session

    async with _session().create_client(
        "dynamodb",
        endpoint_url=dynamo_endpoint,
        config=AioConfig(retries={"max_attempts": 1, "mode": "standard"}),
        **DYNAMO_ENV,
    ) as client:
        yield client


@pytest.fixture
def table_name() -> str:
    return f"sluice_{secrets.token_hex(4)}"


# -- end to end: a real `sluice serve` over PostgreSQL, PouchDB Server and moto -------------

ROW_CAP = 30
LINK_BATCH = 4
TOKENS = {name: f"{name}-{'t' * 24}" for name in ("reader", "writer", "admin", "corpus")}


@dataclass
class Env:
    server: Server
    couch_url: str
    dynamo_endpoint: str
    pg: PgServer

    def post(self, path: str, body: Any, principal: str = "reader") -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[principal]}"}
        with self.server.client() as c:
            return c.post(path, json=body, headers=headers)

    def simple(
        self,
        database: str,
        table: str,
        query: Any,
        principal: str = "reader",
        language: str | None = "default",
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "database": database,
            "table": table,
            "query": query if isinstance(query, str) else json.dumps(query),
        }
        if language == "default":
            language = {"couch": "couchdb", "dyn": "dynamo"}.get(database)
        if language is not None:
            body["language"] = language
        return self.post("/v1/query/simple", body, principal)


def e2e_config(couch: str, dynamo: str, pg: PgServer) -> str:
    from tests.safety.conftest import TABLES_POLICY

    corpus = textwrap.indent(textwrap.dedent(TABLES_POLICY).strip(), " " * 8)

    def principal(name: str, level: str) -> str:
        docs = f"        level: {level}" if name != "corpus" else corpus
        return (
            f"    {name}:\n      couch:\n{docs}\n      dyn:\n{docs}\n      pg:\n        level: R\n"
        )

    tokens = "".join(f"    - token: {t}\n      principal: {p}\n" for p, t in TOKENS.items())
    return f"""\
databases:
  - name: couch
    type: couchdb
    dsn: {couch}
    query_timeout_seconds: 10
  - name: dyn
    type: dynamodb
    endpoint_url: {dynamo}
    region: {DYNAMO_ENV["region_name"]}
    aws_access_key_id: {DYNAMO_ENV["aws_access_key_id"]}
    aws_secret_access_key: {DYNAMO_ENV["aws_secret_access_key"]}
    max_attempts: 1
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
auth:
  tokens:
{tokens}\
permissions:
  principals:
{principal("reader", "R")}\
{principal("writer", "RW")}\
{principal("admin", "RWA")}\
{principal("corpus", "")}\
safety:
  max_rows_per_query: {ROW_CAP}
  max_link_values_per_batch: {LINK_BATCH}
  query_timeout_seconds: 20
"""


@pytest.fixture(scope="session")
def env(
    couch_url: str,
    dynamo_endpoint: str,
    pg_server: PgServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    from tests.api.conftest import start_server, stop_server
    from tests.docstores import seed

    seed.seed_couch(couch_url)
    seed.seed_dynamo(dynamo_endpoint)
    seed.seed_pg(pg_server)
    srv = start_server(
        e2e_config(couch_url, dynamo_endpoint, pg_server), tmp_path_factory.mktemp("e2e_docs")
    )
    try:
        yield Env(srv, couch_url, dynamo_endpoint, pg_server)
    finally:
        stop_server(srv)
        pg_server.run("DROP TABLE IF EXISTS e2e_customers, e2e_picks")
