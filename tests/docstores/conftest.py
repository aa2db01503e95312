"""Document-store servers for the whole test session, started by the tests themselves.

- CouchDB API: PouchDB Server 4.2 (npm, installed into `.cache/npm` by `make test-servers`),
  in memory, on a free loopback port. It returns no `bookmark` from `_find` (the connector
  pages with skip), and refuses `$or` containing `$elemMatch` (real CouchDB answers it).
- DynamoDB: moto's ThreadedMotoServer on a free port, in this process. Client retries are
  off (one attempt), so a server error fails at once instead of after ~30 s of retries.

A server that cannot start fails the run (never a skip). Each test gets its own database or
table names (a random suffix), so tests don't see each other's data.
"""

from __future__ import annotations

import logging
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
POUCHDB_SERVER = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "pouchdb-server"
STARTUP_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    log = open(work / "server.out", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [str(POUCHDB_SERVER), "-p", str(port), "-o", "127.0.0.1", "-m", "-n"],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pouchdb-server exited with {proc.returncode}; see {work}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pouchdb-server did not answer within {STARTUP_S:g}s at {url}")
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
def dynamo_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto DynamoDB server running in this process."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as exc:  # the server raises whatever its thread hit
        pytest.fail(f"moto's DynamoDB server did not start: {exc!r}")
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                pytest.fail(f"moto did not answer within {STARTUP_S:g}s at {url}")
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.stop()


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
