"""MongoDB servers for the connector tests.

No MongoDB can be installed here, so the wire-protocol server `nx-27017` (MongoDB over
SQLite, from the test extra) runs for the whole session on a free loopback port; each test
gets its own database. Its known gaps (integer `_id`s compare as text, `count` with an
ObjectId filter returns 0, no compound `$group` keys, no `$lookup` pipelines or
`$sortByCount`, null does not match a missing field, Decimal128 cannot be stored, a UUID
loses its binary subtype, `$set` of a boolean stores an integer) are kept out of these tests.

`mockupdb` serves the exact-wire tests (a connection dropped mid-cursor, a reply past
`maxTimeMS`, a server that never answers): it is threaded, so a test drives it from a
worker thread while the connector awaits.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mockupdb import MockupDB
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from connectors.config import DatabaseConfig
from connectors.mongo import MongoConnector
from connectors.registry import database_config

pytestmark = pytest.mark.mongodb

STARTUP_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mongodb://127.0.0.1:PORT` of an nx-27017 server started for this session."""
    override = os.environ.get("SLUICE_TEST_MONGO_URI")
    if override:  # a real MongoDB, when one is available
        yield override
        return
    work = tmp_path_factory.mktemp("nx27017")
    port = _free_port()
    exe = Path(sys.executable).with_name("nx-27017")
    log = open(work / "server.out", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [
            str(exe),
            "--db",
            "memory",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "--log-file",
            str(work / "nx.log"),
            "--pid-file",
            str(work / "nx.pid"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nx-27017 exited with {proc.returncode}; see {work / 'server.out'}")
            try:
                with MongoClient(uri, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                break
            except PyMongoError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nx-27017 did not answer ping within {STARTUP_S:g}s at {uri}")
                time.sleep(0.1)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def db_name() -> str:
    return f"sluice_{secrets.token_hex(4)}"


@pytest.fixture
async def mdb(mongo_uri: str, db_name: str) -> AsyncIterator[Any]:
    """A plain PyMongo handle on this test's database, for seeding and checking."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, tz_aware=True, uuidRepresentation="standard"
    )
    try:
        yield client[db_name]
    finally:
        await client.drop_database(db_name)
        await client.close()


def mongo_config(uri: str, database: str, **kw: Any) -> DatabaseConfig:
    return database_config(name="mongo", type="mongodb", dsn=f"{uri}/{database}", **kw)


@pytest.fixture
async def connector(mongo_uri: str, db_name: str, mdb: Any) -> AsyncIterator[MongoConnector]:
    conn = MongoConnector(mongo_config(mongo_uri, db_name))
    await conn.open()
    try:
        yield conn
    finally:
        await conn.close()


class Wire:
    """A MockupDB server whose commands are answered by name (`on("find", handler)`).

    mockupdb matches a command by its name *and* value (`{"find": 1}`), which never fits
    `{"find": "coll"}`; one catch-all responder dispatches on the name instead. A handler
    returns True when it answered; an unanswered request waits in the queue (a server that
    never replies). Every killCursors is recorded in `killed` (cursor ids) and answered.
    """

    def __init__(self) -> None:
        self.server = MockupDB(auto_ismaster={"maxWireVersion": 21})
        self.handlers: dict[str, Callable[[Any], bool]] = {
            "ping": lambda r: bool(r.ok()),
            "endSessions": lambda r: bool(r.ok()),
            "killCursors": self._kill,
        }
        self.killed: list[int] = []
        self.server.autoresponds(self._dispatch)

    @property
    def uri(self) -> str:
        return str(self.server.uri)

    def stop(self) -> None:
        # MockupDB.stop() closes the listening socket under its accept loop's select(), which
        # then dies with EBADF in its thread; let the loop see `_stopped` and end first
        self.server._stopped = True
        self.server._accept_thread.join(5)
        self.server.stop()

    def on(self, command: str, handler: Callable[[Any], bool]) -> None:
        self.handlers[command] = handler

    def _dispatch(self, request: Any) -> bool | None:
        handler = self.handlers.get(getattr(request, "command_name", None) or "")
        return handler(request) if handler is not None else None

    def _kill(self, request: Any) -> bool:
        ids = [int(i) for i in request.doc.get("cursors", [])]
        self.killed.extend(ids)
        return bool(
            request.ok(cursorsKilled=ids, cursorsNotFound=[], cursorsAlive=[], cursorsUnknown=[])
        )


@pytest.fixture
def wire() -> Iterator[Wire]:
    """A scripted wire-protocol server for exact replies and injected failures."""
    w = Wire()
    w.server.run()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(autouse=True)
def no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any blocking call on the event loop (STYLE.md: anyio's blockbuster fixture).

    Sync setup (the nx-27017 subprocess, mockupdb threads) runs outside the loop and is not
    affected; blockbuster only flags calls made from a running event loop's thread.
    """
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx() as bb:
        # PyMongo's client constructor stats /.dockerenv once (driver metadata)
        bb.functions["os.stat"].can_block_in("pymongo/pool_options.py", "get_container_env_info")
        yield
