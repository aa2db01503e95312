"""The Cypher analysis on its own: what each body reads and writes, what is always refused,
and the rewrites (row cap, link filter). The end-to-end verdicts against a real FalkorDB are in
test_e2e.py."""

from __future__ import annotations

import pytest

from connectors.cypher_link import LinkRefused
from connectors.cypher_link import link_text as link
from safety.languages.cypher_analysis import ALL, analyse
from safety.languages.cypher_rewrite import RewriteRefused, cap

R, INS, U, D = "SELECT", "INSERT", "UPDATE", "DELETE"

ACCESS = [
    # reads: every label and relationship type named, `*` for what could be any
    ("MATCH (p:Person)-[:KNOWS]->(f:Person) RETURN p.name, f.name", {("Person", R), ("KNOWS", R)}),
    ("MATCH (p:Person)-[:KNOWS]->(f) RETURN f.name", {("Person", R), ("KNOWS", R), (ALL, R)}),
    ("MATCH (n) RETURN count(n)", {(ALL, R)}),
    ("MATCH (a:Person)--(b:Person) RETURN a.name", {("Person", R), (ALL, R)}),
    ("MATCH (a:Person)-[r]->(b:Person) RETURN a.name", {("Person", R), (ALL, R)}),
    ("MATCH p=(a:Person)-[*1..3]->(b:Person) RETURN length(p)", {("Person", R), (ALL, R)}),
    ("MATCH (a:!Person) RETURN a.name", {("Person", R), (ALL, R)}),
    ("MATCH (a:Person|Company) RETURN a.name", {("Person", R), ("Company", R)}),
    ("MATCH (n:`Weird Label`) RETURN n.`odd prop`", {("Weird Label", R)}),
    ("UNWIND range(1, 3) AS x RETURN x", set()),
    ("CALL db.labels()", {(ALL, R)}),
    # a variable bound with a label keeps it; a re-bound name does not
    (
        "MATCH (a:Person) WITH a AS x MATCH (x)-[:KNOWS]->(y:Person) RETURN y.name",
        {("Person", R), ("KNOWS", R)},
    ),
    ("MATCH (a:Person) WITH a.id AS id MATCH (a) RETURN a", {("Person", R), (ALL, R)}),
    ("MATCH (a:Person) UNION MATCH (a) RETURN a", {("Person", R), (ALL, R)}),
    # patterns inside expressions and subqueries are reads
    (
        "MATCH (a:Person) RETURN [(a)-[:EARNS]->(s:Salary) | s.amount] AS sal",
        {("Person", R), ("EARNS", R), ("Salary", R)},
    ),
    (
        "MATCH (a:Person) WHERE EXISTS { MATCH (a)-[:EARNS]->(:Salary) } RETURN a.name",
        {("Person", R), ("EARNS", R), ("Salary", R)},
    ),
    (
        "MATCH (a:Person) WHERE (a)-[:EARNS]->(:Salary) RETURN a.name",
        {("Person", R), ("EARNS", R), ("Salary", R)},
    ),
    # CALL { } sees only what it imports: an un-imported name is a new, unlabeled node
    ("MATCH (a:Person) CALL { MATCH (a) RETURN a AS b } RETURN b.name", {("Person", R), (ALL, R)}),
    (
        "MATCH (a:Person) CALL { WITH a MATCH (a)-[:KNOWS]->(b:Person) RETURN b } RETURN b.name",
        {("Person", R), ("KNOWS", R)},
    ),
    # writes: the labels of variables bound earlier
    ("MATCH (p:Post) DETACH DELETE p", {("Post", R), ("Post", D)}),
    ("MATCH (p:Post {id: 1}) SET p.title = 'x'", {("Post", R), ("Post", U)}),
    ("MATCH (p:Post {id: 1}) SET p:Archived", {("Post", R), ("Post", U), ("Archived", U)}),
    ("MATCH (p:Post {id: 1}) REMOVE p.title", {("Post", R), ("Post", U)}),
    (
        "CREATE (:Person {name: 'x'})-[:KNOWS]->(:Person {name: 'y'})",
        {("Person", INS), ("KNOWS", INS)},
    ),
    (
        "MATCH (a:Person {id: 1}), (b:Person {id: 2}) CREATE (a)-[:KNOWS]->(b)",
        {("Person", R), ("KNOWS", INS)},
    ),
    (
        "MERGE (p:Person {id: 5}) ON CREATE SET p.created = 1",
        {("Person", R), ("Person", INS), ("Person", U)},
    ),
    ("MATCH (a:Person) FOREACH (x IN [1] | CREATE (:Log {v: x}))", {("Person", R), ("Log", INS)}),
    ("CREATE (n) RETURN n", {(ALL, INS)}),
    ("MATCH (n {id: 1}) DELETE n", {(ALL, R), (ALL, D)}),
    ("CREATE INDEX FOR (p:Person) ON (p.name)", {(ALL, "DDL")}),
    ("DROP INDEX ON :Person(name)", {(ALL, "DDL")}),
]


@pytest.mark.parametrize(("text", "expected"), ACCESS, ids=[a for a, _ in ACCESS])
def test_access(text: str, expected: set[tuple[str, str]]) -> None:
    a = analyse(text)
    assert a.error is None
    assert not a.structural
    assert set(a.access) == expected


REFUSED = [
    "LOAD CSV FROM 'file:///etc/passwd' AS l RETURN l",
    "load csv with headers from 'http://example.invalid/x.csv' AS l CREATE (:X {v: l.v})",
    "CALL apoc.cypher.run('MATCH (s:Salary) RETURN s', {}) YIELD value RETURN value",
    "CALL apoc.load.json('file:///etc/passwd') YIELD value RETURN value",
    "CALL apoc.periodic.iterate('MATCH (n) RETURN n', 'DETACH DELETE n', {})",
    "CALL apoc.export.csv.all('/tmp/x.csv', {})",
    "CALL db.idx.fulltext.createNodeIndex('Person', 'name')",
    "CALL dbms.security.createUser('x', 'y', false)",
    "MATCH (n:Person) CALL { WITH n DETACH DELETE n } IN TRANSACTIONS",
    "USE other MATCH (n:Person) RETURN n.name",
    "EXPLAIN MATCH (n:Person) RETURN n.name",
    "PROFILE MATCH (n:Person) RETURN n.name",
    "COPY Person FROM '/etc/passwd'",
    "ATTACH '/tmp/other.lbug' AS other (dbtype lbug)",
    "INSTALL httpfs",
    "EXPORT DATABASE '/tmp/dump'",
    "MATCH (n:Person) RETURN n.name AS x, $sluice_link AS y",
]


@pytest.mark.parametrize("text", REFUSED)
def test_refused(text: str) -> None:
    a = analyse(text)
    assert a.structural or a.error, a


ERRORS = [
    "MATCH (n:Person) RETURN n; MATCH (s:Salary) DETACH DELETE s",
    "MATCH (n:Person RETURN n",
    "MATCH (n:Person) WHERE n.name = 'unterminated RETURN n",
    "/* open comment MATCH (n) RETURN n",
    "",
    "   ;",
]


@pytest.mark.parametrize("text", ERRORS)
def test_errors(text: str) -> None:
    assert analyse(text).error


def test_keywords_inside_strings_and_names_are_data() -> None:
    a = analyse("MATCH (n:Person) WHERE n.note = 'MATCH (s:Salary) DETACH DELETE s' RETURN n.name")
    assert set(a.access) == {("Person", R)}
    assert a.operation == R
    b = analyse("MATCH (n:Person) RETURN n.`delete` AS `CREATE`, n.set")
    assert b.operation == R and set(b.access) == {("Person", R)}


def test_operation_and_bounds() -> None:
    assert analyse("MATCH (p:Post) DETACH DELETE p").unbounded
    assert not analyse("MATCH (p:Post) WHERE p.id = 1 DETACH DELETE p").unbounded
    assert not analyse("MATCH (p:Post {id: 1}) DELETE p").unbounded
    assert analyse("MATCH (p:Post) SET p.x = 1").unbounded
    assert analyse("MATCH (p:Post) DELETE p").operation == D
    assert analyse("MATCH (n:Person) RETURN n.name").returns_rows
    assert not analyse("CREATE (:Person) RETURN 1").returns_rows


def test_properties_for_column_denies() -> None:
    a = analyse("MATCH (p:Person) WHERE p.salary > 10 RETURN p.name")
    props = {(u.label, u.name) for u in a.properties}
    assert props == {("Person", "salary"), ("Person", "name")}
    whole = analyse("MATCH (p:Person) RETURN p")
    assert ("Person", "*") in {(u.label, u.name) for u in whole.properties}
    counted = analyse("MATCH (p:Person) RETURN count(p), labels(p)")
    assert ("Person", "*") not in {(u.label, u.name) for u in counted.properties}
    projected = analyse("MATCH (p:Person) RETURN p{.*}")
    assert ("Person", "*") in {(u.label, u.name) for u in projected.properties}
    collected = analyse("MATCH (p:Person) WITH collect(p) AS ps RETURN ps")
    assert ("Person", "*") in {(u.label, u.name) for u in collected.properties}


def test_cap() -> None:
    assert cap("MATCH (n:Person) RETURN n.id", 101) == "MATCH (n:Person) RETURN n.id LIMIT 101"
    kept = "MATCH (n:Person) RETURN n.id ORDER BY n.id LIMIT 5"
    assert cap(kept + ";", 101) == kept
    assert cap("MATCH (n:P) RETURN n.id LIMIT 5000", 101) == "MATCH (n:P) RETURN n.id LIMIT 101"
    assert (
        cap("MATCH (n:P) RETURN n.id UNION MATCH (m:P) RETURN m.id LIMIT 3", 101)
        == "MATCH (n:P) RETURN n.id LIMIT 101 UNION MATCH (m:P) RETURN m.id LIMIT 3"
    )
    # an inner LIMIT is the client's; only the final RETURN is capped
    assert cap("MATCH (n:P) WITH n LIMIT 10 RETURN n.id", 101).endswith("RETURN n.id LIMIT 101")
    with pytest.raises(RewriteRefused):
        cap("MATCH (n:P) RETURN n.id LIMIT $many", 101)


def test_link() -> None:
    assert (
        link("MATCH (n:Person)-[:KNOWS]->(m:Person) RETURN n.id AS pid, m.name", "pid")
        == "MATCH (n:Person)-[:KNOWS]->(m:Person) WHERE n.id IN $sluice_link "
        "RETURN n.id AS pid, m.name"
    )
    assert (
        link("MATCH (n:Person) WHERE n.a > 3 OR n.a < 1 RETURN n.id AS pid ORDER BY pid", "pid")
        == "MATCH (n:Person) WHERE n.id IN $sluice_link AND (n.a > 3 OR n.a < 1) "
        "RETURN n.id AS pid ORDER BY pid"
    )
    assert (
        link("MATCH (n:Person) WITH n.id * 2 AS k RETURN k", "k")
        == "MATCH (n:Person) WITH n.id * 2 AS k WITH * WHERE k IN $sluice_link RETURN k"
    )
    with pytest.raises(LinkRefused, match="aggregate"):
        link("MATCH (n:Person) RETURN n.id, count(*) AS c", "c")
    with pytest.raises(LinkRefused, match="does not RETURN"):
        link("MATCH (n:Person) RETURN n.id", "missing")
