"""Real servers for the whole run. Each session gets its own PostgreSQL and MariaDB database,
created here and dropped afterwards; a server that is down fails the run (never a skip).

Environment (with the local defaults): SLUICE_TEST_PG_DSN, SLUICE_TEST_MYSQL_HOST/PORT/USER/
PASSWORD.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from connectors import registry as connectors_registry
from safety.languages import registry as languages_registry
from tests import es_server, s3_server
from tests.servers import MySQLServer, PgServer, fresh_mysql, fresh_pg
from tests.spark_server import SparkStartError, spark_server


@pytest.fixture(scope="session", autouse=True)
def plugin_registries_loaded() -> None:
    """The entry points are read from disk once, as a server does while it loads its config
    before the event loop starts; a test that builds settings inside an async test (with
    blockbuster watching for blocking calls) then finds them loaded, whatever runs first."""
    connectors_registry.names()
    languages_registry.names()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # asyncpg and PyMongo's async client need asyncio
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg() as server:
        yield server


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """A fresh MariaDB database for this test session, dropped at the end."""
    with fresh_mysql() as server:
        yield server


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """Base URL of an Elasticsearch 7.9.2 started for this session (only when a test asks for
    it), stopped at the end; SLUICE_TEST_ES_URL names an external one instead."""
    override = os.environ.get("SLUICE_TEST_ES_URL")
    if override:
        yield override.rstrip("/")
        return
    try:
        server = es_server.start()
    except es_server.EsStartError as exc:
        pytest.fail(f"the Elasticsearch test server did not start: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        es_server.stop(server)


@pytest.fixture(scope="session")
def s3() -> Iterator[s3_server.S3Server]:
    """A SeaweedFS S3 server with an empty bucket, started for this session (only when a test
    asks for it), stopped at the end; failing to start fails the tests that need it."""
    try:
        server = s3_server.start()
    except s3_server.S3StartError as exc:
        pytest.fail(f"the SeaweedFS test server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        s3_server.stop(server)


@pytest.fixture(scope="session")
def spark() -> Iterator[str]:
    """The sc:// address of a local Spark Connect server (1 GB heap), started once for the
    session when a test asks for it and stopped at the end; one that cannot start fails the
    test, loudly. SLUICE_TEST_SPARK_REMOTE names an external one instead."""
    override = os.environ.get("SLUICE_TEST_SPARK_REMOTE")
    if override:
        yield override
        return
    try:
        with spark_server() as server:
            yield server.remote
    except SparkStartError as exc:
        pytest.fail(f"the Spark Connect test server could not start: {exc}", pytrace=False)
