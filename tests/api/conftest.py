"""A real `sluice serve` process (hypercorn) on a free loopback port, over real PostgreSQL,
MariaDB, SQLite and DuckDB databases, polled until it answers (datasette's
wait_until_responds)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.servers import MySQLServer, PgServer, fresh_mysql, fresh_pg

PG_SETUP = [
    "DROP TABLE IF EXISTS items, kinds, secrets",
    """CREATE TABLE kinds (id integer PRIMARY KEY, label text NOT NULL)""",
    """CREATE TABLE items (
        id bigint PRIMARY KEY,
        kind_id integer REFERENCES kinds(id),
        name text NOT NULL,
        price numeric(12,2),
        created timestamptz,
        day date,
        payload jsonb,
        blob bytea,
        uid uuid,
        active boolean)""",
    "CREATE TABLE secrets (id int PRIMARY KEY, token text)",
    "INSERT INTO kinds VALUES (1, 'tool'), (2, 'toy')",
    """INSERT INTO items SELECT g, 1 + g % 2, 'item ' || g, (g * 1.25)::numeric(12,2),
        timestamptz '2025-01-01 00:00:00+00' + g * interval '1 hour', date '2025-01-01' + g,
        jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b')),
        decode(lpad(to_hex(g), 4, '0'), 'hex'),
        ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, g % 2 = 0
        FROM generate_series(1, 500) g""",
    "INSERT INTO secrets VALUES (1, 'hunter2')",
    "ANALYZE",
]

MYSQL_SETUP = [
    "DROP TABLE IF EXISTS orders",
    """CREATE TABLE orders (id BIGINT PRIMARY KEY, item_id BIGINT NOT NULL, qty INT NOT NULL,
        amount DECIMAL(12,2) NOT NULL, placed DATETIME NOT NULL, KEY (item_id))""",
    """INSERT INTO orders
        SELECT seq, 1 + seq % 500, 1 + seq % 5, seq * 0.5, '2025-02-01' + INTERVAL seq MINUTE
        FROM seq_1_to_2000""",
    "ANALYZE TABLE orders",
]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    data_dir: Path
    log_path: Path

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_responds(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not answer {url} within {timeout}s:\n{log.read_text()}")


def start_server(
    config_text: str,
    folder: Path,
    *,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "sluice.yaml"
    config_path.write_text(config_text)
    port = free_port()
    log_path = folder / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "sluice.cli",
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
        *(extra_args or []),
    ]
    with log_path.open("wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, process, config_path, folder / ".sluice", log_path)
    try:
        wait_until_responds(f"{url}/v1/health", process, log_path, timeout)
    except BaseException:
        stop_server(server)  # never leave a half-started server behind
        raise
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def make_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    lite = folder / "lite.sqlite"
    lite.unlink(missing_ok=True)
    con = sqlite3.connect(lite)
    con.executescript("""
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER,
                             city TEXT);
        INSERT INTO people VALUES (1, 'Ada', 36, 'London'), (2, 'Alan', 41, NULL),
                                  (3, 'Grace', 85, 'Arlington');
    """)
    con.commit()
    con.close()
    duck = folder / "duck.duckdb"
    duck.unlink(missing_ok=True)
    d = duckdb.connect(str(duck))
    d.execute(
        "CREATE TABLE visits (id BIGINT PRIMARY KEY, person_id BIGINT, "
        "seen_at TIMESTAMPTZ, ms INTEGER)"
    )
    d.execute(
        "INSERT INTO visits SELECT i, 1 + i % 3, TIMESTAMPTZ '2025-03-01 00:00:00+00' "
        "+ i * INTERVAL 1 MINUTE, i * 10 FROM range(1, 101) t(i)"
    )
    d.close()
    return lite, duck


def config_text(
    pg: PgServer,
    my: MySQLServer,
    lite: Path,
    duck: Path,
    *,
    extra: str = "",
    dead_port: int | None = None,
) -> str:
    dead = ""
    if dead_port is not None:
        dead = (
            f"  - name: gone\n    type: postgresql\n    host: 127.0.0.1\n"
            f"    port: {dead_port}\n    database: x\n    user: postgres\n"
            f"    connect_timeout_seconds: 1\n"
        )
    return f"""\
databases:
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
    query_timeout_seconds: 2
  - name: maria
    type: mysql
    host: {my.host}
    port: {my.port}
    database: {my.database}
    user: {my.user}
    password: "{my.password}"
    pool_size: 4
  - name: lite
    type: sqlite
    path: {lite}
  - name: duck
    type: duckdb
    path: {duck}
{dead}permissions:
  default:
    pg:
      level: R
      tables:
        secrets: none
    maria:
      level: R
    lite:
      level: R
    duck:
      level: R
    gone:
      level: R
safety:
  max_rows_per_query: 100
  inline_rows: 50
  query_timeout_seconds: 5
{extra}"""


@pytest.fixture(scope="session")
def seeded() -> Iterator[tuple[PgServer, MySQLServer]]:
    """Databases of the API tests' own: the session databases' tables belong to other
    packages (tests/connectors recreates the whole public schema, with foreign keys)."""
    with fresh_pg() as pg, fresh_mysql() as my:
        pg.run(*PG_SETUP)
        my.run(*MYSQL_SETUP)
        yield pg, my


@pytest.fixture(scope="session")
def server(
    seeded: tuple[PgServer, MySQLServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    pg, my = seeded
    folder = tmp_path_factory.mktemp("server")
    lite, duck = make_files(folder / "files")
    srv = start_server(config_text(pg, my, lite, duck, dead_port=free_port()), folder)
    try:
        yield srv
    finally:
        stop_server(srv)
