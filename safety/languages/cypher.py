"""Cypher as a `Language`: property graphs (FalkorDB, ladybug files).

Node labels and relationship types are the tables of the permission model
(`tables: {Person: R, KNOWS: R, Salary: none}`); `*` stands for "any label or type" (an
unlabeled node, an untyped relationship, a label negation, a metadata procedure), which the
policy grants only as far as the database's baseline and every one of its table entries allow
(`Salary: none` keeps an unlabeled pattern out). The analysis is cypher_analysis.py, the row
cap cypher_rewrite.py; the link filter is bound by the connector (connectors/cypher_link.py).

How far the analysis goes, and what backs it up: it works on tokens and clauses, not a full
grammar. It follows variables through WITH projections, UNION branches, CALL subqueries,
pattern comprehensions and EXISTS/COUNT subqueries, and where it cannot tell it assumes more
access (`*`), never less. Reads run in the server's read-only mode (FalkorDB GRAPH.RO_QUERY,
ladybug's read-only database), so a read the analysis misjudged still cannot write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from connectors.base import LinkFilter
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.languages.cypher_analysis import ALL, CypherAnalysis, analyse
from safety.languages.cypher_rewrite import cap as cap_text
from safety.policy import EVERY_TABLE
from safety.text_cache import text_cache
from safety.types import Finding, Operation, TableRef
from safety.verdicts import Block

if TYPE_CHECKING:
    from connectors.base import Connector, Statement


@text_cache
def analyse_cypher(text: str) -> CypherAnalysis:
    return analyse(text)


def _ref(label: str) -> TableRef:
    return TableRef(EVERY_TABLE if label == ALL else label.lower())


class CypherLanguage(Language):
    name: ClassVar[str] = "cypher"
    examples: ClassVar[tuple[str, ...]] = (
        "MATCH (p:Person)-[:KNOWS]->(f:Person) WHERE p.age > 30 RETURN p.name, f.name",
        "MATCH (c:Customer) RETURN c.city AS city, count(*) AS n ORDER BY n DESC LIMIT 10",
        "MATCH (p:Person {id: 7}) SET p.active = true",
    )

    def analyse(self, text: str, dialect: str) -> CypherAnalysis:
        return analyse_cypher(text)

    def declared(self, table: str) -> TableRef:
        return _ref(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, CypherAnalysis)
        if analysis.error is not None:
            return []
        return [(_ref(label), op) for label, op in analysis.access]

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE")]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        """The step's `table` must be a label or type the query works on (or the query may
        reach every label): what is checked is what runs."""
        assert isinstance(analysis, CypherAnalysis)
        targets = {label.lower() for label, _ in analysis.access}
        if not targets or ALL in targets or step.table.lower() in targets:
            return None
        names = ", ".join(sorted(dict.fromkeys(label for label, _ in analysis.access)))
        return (
            f"the query works on {names}, not on the step's table {step.table!r}",
            "set the step's table to a label or relationship type the query matches",
        )

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, CypherAnalysis)
        for use in analysis.properties:
            grant = step.grant(_ref(use.label))
            denied = grant.deny_columns
            if not denied:
                continue
            where = f"{step.database}.{use.label}"
            if use.name == "*":
                return Block(
                    f"Access denied: whole {where} entities would return denied properties "
                    f"({', '.join(sorted(denied))})",
                    "return the properties you need (`n.name`) instead of the node",
                    f"{grant.entry}.deny_columns",
                )
            if use.name in denied:
                return Block(
                    f"Access denied: property {where}.{use.name} is denied ({use.use}); "
                    f"policy {grant.entry}.deny_columns",
                    f"remove {use.name} from the query, or from {grant.entry}.deny_columns",
                    f"{grant.entry}.deny_columns",
                )
        return None

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, CypherAnalysis)
        if not analysis.returns_rows:
            return Rewrite(query, None)
        # the link predicate goes inside the query, before the final LIMIT: capped text is fine
        return Rewrite(cap_text(query, cap + 1), cap)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        # an empty link list matches nothing; the server still returns the columns
        if link_column is None:
            return statement
        return connector.with_link(statement, LinkFilter(link_column, [], "VARCHAR"))
