"""The `vector` language: similarity search and point writes over pgvector, Qdrant and
LanceDB. The body is one JSON object with an `intent` (connectors/vector_query.py defines it
and parses it; this module decides what the policy must grant and what runs).

Operation per intent (the levels the SQL path uses):
- R (SELECT): search, near_text, hybrid, fetch, scroll, count;
- W: upsert (INSERT), set_payload/update (UPDATE), delete by `ids` or a non-empty `filter`
  (DELETE);
- A: delete with an empty filter and delete_all (unbounded DELETE), set_payload with an empty
  filter (unbounded UPDATE), create_collection, drop_collection and an upsert with
  `"add_fields": true` (it may add columns to a LanceDB table: DDL).

Always refused: bodies that do not parse, unknown intents or keys, filters deeper or larger
than the bounds, `ef`/`probes` over their bounds, non-finite numbers, and a `collection` in
the body other than the step's table (what is checked is what runs: the backends only ever
use the step's table). A vector of the wrong dimension is refused by the backend before it
runs anything (the dimension is the collection's, known only there).

GUARDRAILS: reads that return points fetch at most cap + 1 (a larger `limit` is lowered and
the truncation is reported, as SQL's LIMIT is); count and writes have no cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from connectors.base import LinkFilter
from connectors.vector_query import InvalidVectorQuery, VectorQuery, parse, with_limit
from safety.languages.base import Language, Rewrite
from safety.text_cache import text_cache
from safety.types import TableRef
from safety.verdicts import Block

if TYPE_CHECKING:
    from connectors.base import Connector, Statement
    from safety.languages.base import Analysis, StepView
    from safety.types import Finding, Operation

_OPERATIONS: dict[str, Operation] = {
    "search": "SELECT",
    "near_text": "SELECT",
    "hybrid": "SELECT",
    "fetch": "SELECT",
    "scroll": "SELECT",
    "count": "SELECT",
    "upsert": "INSERT",
    "set_payload": "UPDATE",
    "update": "UPDATE",
    "delete": "DELETE",
    "delete_all": "DELETE",
    "create_collection": "DDL",
    "drop_collection": "DDL",
}
_ROW_INTENTS = frozenset({"search", "near_text", "hybrid", "fetch", "scroll"})


@dataclass(frozen=True, slots=True)
class VectorAnalysis:
    query: VectorQuery | None
    error: str | None = None
    suggestion: str | None = None
    operation: Operation = "SELECT"
    unbounded: bool = False
    structural: tuple[Finding, ...] = ()
    injection_blocks: tuple[Finding, ...] = ()
    injection_warnings: tuple[str, ...] = ()
    fields: tuple[str, ...] = field(default=())


@text_cache
def analyse_vector(text: str) -> VectorAnalysis:
    try:
        query = parse(text)
    except InvalidVectorQuery as exc:
        return VectorAnalysis(None, error=exc.message, suggestion=exc.suggestion)
    # an upsert that may add fields to the collection's schema changes its structure
    operation: Operation = "DDL" if query.add_fields else _OPERATIONS[query.intent]
    return VectorAnalysis(
        query,
        operation=operation,
        unbounded=query.deletes_everything,
        fields=query.fields(),
    )


class VectorLanguage(Language):
    """Vector-store intents (the JSON shape in connectors/vector_query.py)."""

    name: ClassVar[str] = "vector"
    # a body is one msgspec JSON decode (~0.2 ms for a 384-float search): a worker thread
    # hop costs more than that under load; upserts of many points still go off the loop
    check_on_loop_chars: ClassVar[int] = 65_536
    examples: ClassVar[tuple[str, ...]] = (
        '{"intent": "near_text", "text": "waterproof hiking boots", "limit": 5}',
        '{"intent": "search", "vector": [0.12, -0.03, 0.4], "filter": {"category": "outdoor"}, '
        '"limit": 10}',
        '{"intent": "scroll", "filter": {"price": {"$lt": 50}}, "limit": 100}',
        '{"intent": "count", "filter": {"category": "tea"}}',
        '{"intent": "upsert", "points": [{"id": 21, "vector": [0.1, 0.2, 0.3], "payload": '
        '{"name": "Tent"}}]}',
    )

    def analyse(self, text: str, dialect: str) -> VectorAnalysis:
        return analyse_vector(text)

    def declared(self, table: str) -> TableRef:
        schema, _, name = table.rpartition(".")
        return TableRef(name, schema) if schema else TableRef(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, VectorAnalysis)
        if analysis.error is not None:
            return []
        return [(self.declared(table), analysis.operation)]

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE") and ref == declared]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, VectorAnalysis)
        named = analysis.query.collection if analysis.query is not None else None
        if named is not None and named != step.table:
            return (
                f"the body names collection {named!r}, but the step's table is {step.table!r}",
                "set the step's table to the collection you mean, or drop `collection` "
                "from the body",
            )
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, VectorAnalysis)
        grant = step.grant(self.declared(step.table))
        denied = grant.deny_columns
        query = analysis.query
        if not denied or query is None:
            return None
        where = f"{step.database}.{step.table}"
        for name in analysis.fields:
            if name.lower() in denied:
                return Block(
                    f"Access denied: field {where}.{name} is denied; policy "
                    f"{grant.entry}.deny_columns",
                    f"remove {name} from the body, or from {grant.entry}.deny_columns",
                    f"{grant.entry}.deny_columns",
                )
        if query.intent in _ROW_INTENTS and query.with_payload is True:
            return Block(
                f"Access denied: whole payloads of {where} would return denied fields "
                f"({', '.join(sorted(denied))})",
                'list the fields you need in `with_payload`, e.g. "with_payload": ["name"]',
                f"{grant.entry}.deny_columns",
            )
        return None

    def prompt_text(self, query: str) -> str:
        # a JSON body: its strings are data (a near_text text is a search, not an order)
        return "" if query.lstrip().startswith("{") else query

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, VectorAnalysis)
        q = analysis.query
        if q is None or q.intent not in _ROW_INTENTS:
            return Rewrite(query, None)
        return Rewrite(with_limit(query, cap + 1), cap)

    def empty_probe(
        self, statement: Statement, connector: Connector, link_column: str | None
    ) -> Statement:
        # an empty link matches nothing: the backend's own filter, with no values
        return connector.with_link(statement, LinkFilter(link_column or "id", [], "VARCHAR"))
