"""Cypher steps end to end on a real FalkorDB server and real ladybug files: reads compared
with each client's own answer, writes per grant, the hostile corpus leaving the graph
unchanged, the server's read-only mode as the second wall, and linked joins with PostgreSQL in
both directions checked against joins computed from the source data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ladybug
import msgspec
import pytest

from api.envelopes import QuerySuccess
from api.local import open_service
from api.service import SafetyBlocked
from connectors import registry
from connectors.base import LinkFilter, Statement
from connectors.errors import QueryFailed, QueryTimedOut
from connectors.falkordb import shape
from engine.config import Config
from engine.ir import FederatedQuery

pytestmark = [pytest.mark.postgres]


def fingerprint(g: Any) -> tuple[Any, ...]:
    """Everything a write could change: counts and a digest of every node's properties."""
    nodes = g.ro_query("MATCH (n) RETURN count(n)").result_set[0][0]
    rels = g.ro_query("MATCH ()-[r]->() RETURN count(r)").result_set[0][0]
    labels = g.ro_query("MATCH (n) RETURN labels(n)[0] AS l, count(*) AS c ORDER BY l").result_set
    props = g.ro_query(
        "MATCH (n) RETURN labels(n)[0] AS l, n.id AS id, properties(n) AS p ORDER BY l, id"
    ).result_set
    return nodes, rels, tuple(map(tuple, labels)), repr(props)


def raw_rows(g: Any, text: str) -> list[dict[str, Any]]:
    result = g.ro_query(text)
    names = [h[1] for h in result.header]
    return [dict(zip(names, (shape(v) for v in row), strict=True)) for row in result.result_set]


READS = [
    "MATCH (p:Person) WHERE p.age > 50 RETURN p.id AS id, p.name AS name ORDER BY id",
    "MATCH (p:Person)-[k:KNOWS]->(f:Person) RETURN p.id, f.id, k.since ORDER BY p.id, f.id",
    "MATCH (p:Person) RETURN p.age % 5 AS bucket, count(*) AS n ORDER BY bucket",
    "MATCH (c:Customer)-[r:REFERRED]->(d:Customer) WHERE c.id < 20 "
    "RETURN c.id AS referrer, d.id AS referred, r.channel ORDER BY referrer",
    "MATCH (c:Customer)-[r:REFERRED]->(d:Customer) WHERE c.id < 4 RETURN r ORDER BY c.id",
    "MATCH p = (c:Customer)-[:REFERRED]->(:Customer) WHERE c.id = 3 RETURN p",
    "MATCH (p:Post) RETURN p ORDER BY p.id LIMIT 3",
    "UNWIND range(1, 5) AS x RETURN x, x * 1.5 AS y, toString(x) AS s, [x, x] AS l",
]


@pytest.mark.parametrize("text", READS)
async def test_reads_match_the_client(config: Config, graph: tuple[str, Any], text: str) -> None:
    _, g = graph
    table = "Customer" if "Customer" in text else "Post" if ":Post" in text else "Person"
    async with open_service(config, principal="admin") as session:
        result = await session.simple("social", table, text)
    assert isinstance(result, QuerySuccess)
    expected = raw_rows(g, text)
    assert expected, "the fixture graph answers every read with rows"
    assert msgspec.json.decode(msgspec.json.encode(result.data.rows)) == msgspec.json.decode(
        msgspec.json.encode(expected)
    )


async def test_row_cap_and_truncation(config: Config, graph: tuple[str, Any]) -> None:
    async with open_service(config) as session:
        result = await session.simple(
            "social", "Customer", "MATCH (c:Customer) RETURN c.id AS id ORDER BY id"
        )
        dry = await session.simple(
            "social", "Customer", "MATCH (c:Customer) RETURN c.id", dry_run=True
        )
    assert isinstance(result, QuerySuccess)
    assert len(result.data.rows) == 300
    assert not result.data.truncated
    (step,) = dry.steps  # type: ignore[union-attr]
    assert step.rewritten == "MATCH (c:Customer) RETURN c.id LIMIT 1001"


async def test_denied_labels_properties_and_unlabeled_patterns(
    config: Config, graph: tuple[str, Any]
) -> None:
    _, g = graph
    before = fingerprint(g)
    blocked = {
        # a denied label, directly and through traversals
        "MATCH (s:Salary) RETURN s.amount": "RBAC_GATE",
        "MATCH (p:Person)-[:EARNS]->(s:Salary) RETURN s.amount": "RBAC_GATE",
        # an unlabeled node or untyped relationship may reach Salary
        "MATCH (p:Person)-->(x) RETURN x": "RBAC_GATE",
        "MATCH (p:Person)-[r]->(x:Person) RETURN p.id": "RBAC_GATE",
        "MATCH (n) RETURN n": "RBAC_GATE",
        "MATCH (p:Person) WITH p.id AS id MATCH (p) RETURN p": "RBAC_GATE",
        "MATCH (p:Person) RETURN [(p)-[:EARNS]->(s:Salary) | s.amount] AS pay": "RBAC_GATE",
        "CALL db.labels()": "RBAC_GATE",
        # a denied property, and whole nodes that would carry it
        "MATCH (p:Person) RETURN p.email": "RBAC_GATE",
        "MATCH (p:Person) WHERE p.email = 'p1@example.com' RETURN p.id": "RBAC_GATE",
        "MATCH (p:Person) RETURN p": "RBAC_GATE",
        "MATCH (p:Person) RETURN p{.*}": "RBAC_GATE",
        "MATCH (p:Person) RETURN properties(p)": "RBAC_GATE",
    }
    async with open_service(config, principal="reader") as session:
        for text, stage in blocked.items():
            with pytest.raises(SafetyBlocked) as info:
                await session.simple("social", "Person", text)
            assert info.value.block.stage == stage, (text, info.value.block)
        ok = await session.rows("social", "Person", "MATCH (p:Person) RETURN p.id, p.name")
    assert len(ok) == 60
    assert fingerprint(g) == before


HOSTILE = [
    # writes hidden behind variables, clauses and subqueries
    ("MATCH (p:Post) DETACH DELETE p", "RBAC_GATE"),
    ("MATCH (p:Person {id: 1}) SET p.name = 'x'", "RBAC_GATE"),
    ("MATCH (a:Person) WITH a AS x SET x.age = 0", "RBAC_GATE"),
    ("MATCH (a:Person) FOREACH (i IN [1] | CREATE (:Person {id: 1000 + i}))", "RBAC_GATE"),
    ("MATCH (a:Person {id: 1}) CALL { WITH a DETACH DELETE a } RETURN 1", "RBAC_GATE"),
    ("MERGE (p:Person {id: 999}) RETURN p.id", "RBAC_GATE"),
    ("MATCH (p:Person) REMOVE p.name", "RBAC_GATE"),
    # refused whatever the grant
    ("LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line", "AST_CHECKER"),
    (
        "CALL apoc.cypher.run('MATCH (s:Salary) DETACH DELETE s', {}) YIELD value RETURN value",
        "AST_CHECKER",
    ),
    ("CALL db.idx.fulltext.createNodeIndex('Person', 'name')", "AST_CHECKER"),
    ("MATCH (p:Person) RETURN p.id; MATCH (s:Salary) DETACH DELETE s", "AST_CHECKER"),
    ("MATCH (p:Person) RETURN p.id LIMIT $n", "AST_CHECKER"),
    ("CREATE INDEX FOR (p:Person) ON (p.name)", "RBAC_GATE"),
    # what is checked is what runs: the step's table must be what the query works on
    ("MATCH (p:Post) RETURN p.id", "AST_CHECKER"),
]


@pytest.mark.parametrize(("text", "stage"), HOSTILE, ids=[t for t, _ in HOSTILE])
async def test_hostile_corpus_leaves_the_graph_unchanged(
    config: Config, graph: tuple[str, Any], text: str, stage: str
) -> None:
    _, g = graph
    before = fingerprint(g)
    async with open_service(config, principal="reader") as session:
        with pytest.raises(SafetyBlocked) as info:
            await session.simple("social", "Person", text)
    assert info.value.block.stage == stage, info.value.block
    assert fingerprint(g) == before


async def test_writes_per_grant(config: Config, graph: tuple[str, Any]) -> None:
    _, g = graph
    update = "MATCH (p:Post) WHERE p.id = 3 SET p.title = 'edited'"
    async with open_service(config, principal="reader") as session:
        with pytest.raises(SafetyBlocked):
            await session.simple("social", "Post", update)
    assert g.ro_query("MATCH (p:Post {id: 3}) RETURN p.title").result_set == [["post 3"]]
    async with open_service(config, principal="writer") as session:
        result = await session.simple("social", "Post", update)
        assert isinstance(result, QuerySuccess) and result.data.rows_affected == 1
        created = await session.simple(
            "social", "Post", "MATCH (a:Person {id: 2}) CREATE (a)-[:WROTE]->(:Post {id: 2})"
        )
        assert isinstance(created, QuerySuccess) and created.data.rows_affected == 3
        # every Post without a filter needs A, even with W
        with pytest.raises(SafetyBlocked) as unbounded:
            await session.simple("social", "Post", "MATCH (p:Post) DETACH DELETE p")
        assert "admin permission" in unbounded.value.block.reason
        # Salary stays out of reach of a write grant on other labels
        with pytest.raises(SafetyBlocked):
            await session.simple(
                "social", "Person", "MATCH (p:Person {id: 1})-[:EARNS]->(s) SET s.amount = 0"
            )
    assert g.ro_query("MATCH (p:Post {id: 3}) RETURN p.title").result_set == [["edited"]]
    assert g.ro_query("MATCH (:Person {id: 2})-[:WROTE]->(p:Post) RETURN count(p)").result_set == [
        [1]
    ]
    assert g.ro_query("MATCH (s:Salary) WHERE s.amount = 0 RETURN count(s)").result_set == [[0]]
    async with open_service(config, principal="admin") as session:
        gone = await session.simple("social", "Post", "MATCH (p:Post) DETACH DELETE p")
        assert isinstance(gone, QuerySuccess) and gone.data.rows_affected >= 20
    assert g.ro_query("MATCH (p:Post) RETURN count(p)").result_set == [[0]]


async def test_read_only_mode_is_the_second_wall(config: Config, graph: tuple[str, Any]) -> None:
    """A write that reached the connector as a read (a gap in the analysis) is refused by the
    server itself."""
    _, g = graph
    before = fingerprint(g)
    connector = registry.create(config.database("social"))  # type: ignore[arg-type]
    await connector.open()
    try:
        with pytest.raises(QueryFailed, match="read-only"):
            async for _ in connector.stream(
                Statement("MATCH (p:Post) DETACH DELETE p", readonly=True)
            ):
                pass
        with pytest.raises(QueryTimedOut):
            async for _ in connector.stream(
                Statement("UNWIND range(1, 200000000) AS x RETURN sum(x)", timeout=0.2)
            ):
                pass
    finally:
        await connector.close()
    assert fingerprint(g) == before


async def test_ladybug_reads_writes_and_read_only_wall(config: Config, lbug_path: Path) -> None:
    text = (
        "MATCH (a:Customer)-[r:REFERRED]->(b:Customer) RETURN a.id, b.id, r.channel ORDER BY a.id"
    )
    async with open_service(config, principal="admin") as session:
        result = await session.rows("refs", "Customer", text)
    db = ladybug.Database(str(lbug_path), read_only=True)
    con = ladybug.Connection(db)
    raw = con.execute(text)
    names = raw.get_column_names()
    expected = [dict(zip(names, r, strict=True)) for r in raw.get_all()]
    con.close()
    db.close()
    assert result == expected and len(expected) == 149
    async with open_service(config, principal="reader") as session:
        with pytest.raises(SafetyBlocked):  # Secret: none, also through an untyped pattern
            await session.simple("refs", "Customer", "MATCH (c:Customer)-->(x) RETURN x")
        with pytest.raises(SafetyBlocked):
            await session.simple("refs", "Customer", "MATCH (c:Customer {id: 1}) DELETE c")
    async with open_service(config, principal="writer") as session:
        done = await session.simple(
            "refs", "Customer", "CREATE (c:Customer {id: 5000, name: 'new'}) RETURN c.id"
        )
        assert isinstance(done, QuerySuccess)
        rows = await session.rows(
            "refs", "Customer", "MATCH (c:Customer) WHERE c.id = 5000 RETURN c.name"
        )
        assert rows == [{"c.name": "new"}]
    connector = registry.create(config.database("refs"))  # type: ignore[arg-type]
    await connector.open()
    try:
        with pytest.raises(QueryFailed, match="read-only"):
            async for _ in connector.stream(Statement("MATCH (c:Customer) DELETE c")):
                pass
    finally:
        await connector.close()


def federated(body: dict[str, Any]) -> FederatedQuery:
    return msgspec.convert(body, FederatedQuery)


@pytest.mark.parametrize("graph_db", ["social", "refs"])
async def test_linked_join_postgres_into_graph(
    config: Config, orders: list[tuple[int, int, int]], graph_db: str
) -> None:
    """Orders over 40 in PostgreSQL -> who their customers referred, in the graph."""
    body = {
        "steps": [
            {"step_id": "o", "database": "pg", "table": "graph_orders",
             "query": "SELECT id, customer_id, amount FROM graph_orders WHERE amount > 40"},
            {"step_id": "r", "database": graph_db, "table": "Customer", "language": "cypher",
             "query": "MATCH (c:Customer)-[:REFERRED]->(d:Customer) "
                      "RETURN c.id AS customer_id, d.id AS referred",
             "depends_on": ["o"], "link_from": "customer_id", "link_to": "customer_id"},
        ],
        "merge": "SELECT o.id, o.customer_id, r.referred FROM o JOIN r USING (customer_id) "
                 "ORDER BY o.id, r.referred",
    }  # fmt: skip
    async with open_service(config, principal="admin") as session:
        result = await session.federated(federated(body))
    assert isinstance(result, QuerySuccess)
    referred = {c: c * 2 + 1 for c in range(1, 301) if c * 2 + 1 <= 300}
    expected = sorted(
        (oid, cid, referred[cid]) for oid, cid, amount in orders if amount > 40 and cid in referred
    )
    assert [(r["id"], r["customer_id"], r["referred"]) for r in result.data.rows] == expected
    assert expected
    (meta,) = [m for m in result.metadata.steps if m.step_id == "r"]
    assert meta.strategy == "link"


async def test_linked_join_graph_into_postgres(
    config: Config, orders: list[tuple[int, int, int]]
) -> None:
    """Customers referred through the web channel (graph) -> their orders (PostgreSQL)."""
    body = {
        "steps": [
            {"step_id": "g", "database": "social", "table": "Customer",
             "query": "MATCH (c:Customer)-[r:REFERRED {channel: 'web'}]->(d:Customer) "
                      "RETURN d.id AS referred"},
            {"step_id": "o", "database": "pg", "table": "graph_orders",
             "query": "SELECT id, customer_id, amount FROM graph_orders",
             "depends_on": ["g"], "link_from": "referred", "link_to": "customer_id"},
        ],
        "merge": "SELECT o.id, o.customer_id, o.amount FROM o ORDER BY o.id",
    }  # fmt: skip
    async with open_service(config, principal="admin") as session:
        result = await session.federated(federated(body))
    assert isinstance(result, QuerySuccess)
    web = {c * 2 + 1 for c in range(1, 301) if c % 2 == 1 and c * 2 + 1 <= 300}
    expected = [(i, c, a) for i, c, a in orders if c in web]
    assert [(r["id"], r["customer_id"], r["amount"]) for r in result.data.rows] == expected
    assert expected


async def test_an_empty_parent_gives_an_empty_graph_child(
    config: Config, orders: list[tuple[int, int, int]]
) -> None:
    body = {
        "steps": [
            {"step_id": "o", "database": "pg", "table": "graph_orders",
             "query": "SELECT customer_id FROM graph_orders WHERE amount > 1000"},
            {"step_id": "r", "database": "social", "table": "Customer",
             "query": "MATCH (c:Customer) RETURN c.id AS customer_id, c.name AS name",
             "depends_on": ["o"], "link_from": "customer_id", "link_to": "customer_id"},
        ],
        "merge": "SELECT r.customer_id, r.name FROM r",
    }  # fmt: skip
    async with open_service(config, principal="admin") as session:
        result = await session.federated(federated(body))
    assert isinstance(result, QuerySuccess)
    assert result.data.rows == []


async def test_link_batches_bind_values_as_a_parameter(config: Config) -> None:
    connector = registry.create(config.database("social"))  # type: ignore[arg-type]
    await connector.open()
    try:
        base = Statement("MATCH (c:Customer) RETURN c.id AS id, c.name AS name")
        hostile = ["1' OR 1=1 //", "x}) DETACH DELETE n //"]
        linked = connector.with_link(base, LinkFilter("id", [3, 5, *hostile], "BIGINT"))
        assert "$sluice_link" in linked.text and "DELETE" not in linked.text
        rows = [r async for b in connector.stream(linked) for r in (b.rows or [])]
        assert sorted(r[0] for r in rows) == [3, 5]
    finally:
        await connector.close()


@pytest.mark.parametrize("database", ["social", "refs"])
async def test_discovery_lists_labels_types_and_property_types(
    config: Config, database: str
) -> None:
    connector = registry.create(config.database(database))  # type: ignore[arg-type]
    await connector.open()
    try:
        tables = {t.name: t for t in await connector.discover()}
    finally:
        await connector.close()
    customer = tables["Customer"]
    assert customer.row_count_estimate == 300
    fields = {f.name: f for f in customer.fields}
    assert fields["id"].data_type == "BIGINT" and fields["name"].data_type == "VARCHAR"
    dist = fields["id"].distribution
    assert dist is not None and dist.min_value == 1 and dist.null_fraction == 0.0
    referred = tables["REFERRED"]
    assert referred.row_count_estimate == 149
    assert {f.name for f in referred.fields} == {"channel"}
    if database == "social":
        assert tables["Person"].row_count_estimate == 60
        assert {"KNOWS", "EARNS", "Salary", "Post", "WROTE"} <= set(tables)


async def test_ladybug_timeout_interrupts_the_query(config: Config) -> None:
    connector = registry.create(config.database("refs"))  # type: ignore[arg-type]
    await connector.open()
    try:
        with pytest.raises(QueryTimedOut):
            async for _ in connector.stream(
                Statement(
                    "MATCH (a:Customer), (b:Customer), (d:Customer), (e:Customer) "
                    "WHERE a.id + b.id * d.id * e.id = 7 RETURN count(*)",
                    timeout=0.3,
                )
            ):
                pass
        # the connection is usable again at once
        rows = [
            r async for b in connector.stream(Statement("RETURN 1 AS one")) for r in b.rows or []
        ]
        assert rows == [(1,)]
    finally:
        await connector.close()
