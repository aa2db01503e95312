"""The shared result store over the session's SeaweedFS and PostgreSQL: each test gets an
index schema and an object prefix of its own, and may build several stores over them (each
one models another process: no memory shared with the others)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.config import ResultsConfig
from engine.object_results import ObjectResultStore, filesystem
from engine.results_index import ResultIndex
from tests.s3_server import CountingProxy, S3Server
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


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[CountingProxy]:
    p = CountingProxy(("127.0.0.1", s3.port))
    p.start()
    try:
        yield p
    finally:
        p.close()
