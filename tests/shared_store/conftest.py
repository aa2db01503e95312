"""The shared result store over the session's SeaweedFS and PostgreSQL: each test gets an
index schema and an object prefix of its own, and may build several stores over them (each
one models another process: no memory shared with the others)."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.config import ResultsConfig
from engine.object_results import ObjectResultStore, filesystem
from engine.results_index import ResultIndex
from tests.s3_server import S3Server
from tests.servers import PgServer

StoreFactory = Callable[..., ObjectResultStore]


@dataclass
class Place:
    index_url: str
    prefix: str
    config: ResultsConfig


@pytest.fixture
def place(s3: S3Server, pg_server: PgServer, request: pytest.FixtureRequest) -> Place:
    schema = f"store_{secrets.token_hex(4)}"
    request.addfinalizer(lambda: pg_server.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    prefix = f"t{secrets.token_hex(4)}/"
    url = f"{pg_server.dsn}?schema={schema}"
    config = ResultsConfig(
        store="s3", endpoint=s3.endpoint, bucket=s3.bucket, prefix=prefix, index=url
    )
    return Place(url, prefix, config)


@pytest.fixture
def make_store(s3: S3Server, place: Place) -> StoreFactory:
    """make_store(endpoint=None, **bounds): a store over the test's place, not yet opened."""

    def make(endpoint: str | None = None, **bounds: Any) -> ObjectResultStore:
        cfg = place.config
        if endpoint is not None:
            cfg = ResultsConfig(**{**_fields(cfg), "endpoint": endpoint})
        fs = filesystem(cfg, env=s3.env())
        return ObjectResultStore(
            fs, s3.bucket, place.prefix, ResultIndex(place.index_url, pool_size=2), **bounds
        )

    return make


def _fields(cfg: ResultsConfig) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__struct_fields__}


@dataclass
class CountingProxy:
    """A TCP proxy in front of the S3 server counting the bytes the server sends back, so a
    test sees what a page really fetched (nothing the store reports about itself)."""

    target: tuple[str, int]
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sock: socket.socket = field(default_factory=socket.socket)
    closed: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.received = 0

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self.lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # each socket is the source of one pump, which closes it; the other pump, if it
            # is still reading, sees the shutdown and ends too
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            src.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[CountingProxy]:
    p = CountingProxy(("127.0.0.1", s3.port))
    p.start()
    try:
        yield p
    finally:
        p.close()
