"""The federated path's one decision about Spark: does this request's merge go there?

    handoff = Handoff.prepare(query.engine, spark, plan, merge_sql)   # before any step runs
    stored = await handoff.merge(tables, plan, store, ...)            # None: merge in DuckDB

A request that asks for `"engine": "spark"` is checked before its steps run (a merge Spark
would answer differently is a 400 at once, and so is asking without `engine.spark`
configured); from then on every refusal or failure of Spark is the request's error. A
request that did not choose goes to Spark only past `engine.spark.min_rows` step rows, and
when Spark refuses its merge or cannot be reached, the merge runs in DuckDB as it always
did, with a warning saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from engine import spark_sql
from engine.errors import InvalidRequest, MergeNotPortable, SparkUnavailable
from engine.merge import parse_merge
from engine.plan import Plan
from engine.results import ResultStore, StoredResult
from engine.sink import RequestTables
from engine.spark import SparkMerger


@dataclass
class Handoff:
    requested: str | None
    spark: SparkMerger | None
    tree: exp.Expression | None
    warnings: list[str] = field(default_factory=list)
    ran_on: str | None = None

    @classmethod
    def prepare(
        cls, requested: str | None, spark: SparkMerger | None, plan: Plan, merge_sql: str | None
    ) -> Handoff:
        if requested == spark_sql.TARGET and spark is None:
            raise InvalidRequest(
                'the request asks for "engine": "spark", but engine.spark is not configured',
                suggestion="configure engine.spark (remote, staging) in sluice.yaml, or leave "
                '"engine" out to merge in DuckDB',
            )
        tree = None
        if merge_sql is not None:
            tree = plan.merge_tree if plan.merge_tree is not None else parse_merge(merge_sql)
        if requested == spark_sql.TARGET and tree is not None:
            spark_sql.check(tree)  # what can be told before the steps run: refuse now
        return cls(requested, spark, tree)

    async def merge(
        self,
        tables: RequestTables,
        plan: Plan,
        store: ResultStore,
        request_id: str,
        inline_rows: int,
        owner: str | None,
    ) -> StoredResult | None:
        """The merge run on Spark and stored, or None when it belongs to DuckDB."""
        if self.spark is None:
            return None
        rows = sum(state.rows for state in tables.tables.values())
        if not self.spark.wants(self.requested, rows):
            return None
        try:
            stored = await self.spark.merge_and_store(
                tables,
                self.tree,
                list(plan.order),
                store,
                request_id,
                inline_rows=inline_rows,
                owner=owner,
            )
        except (MergeNotPortable, SparkUnavailable) as exc:
            if self.requested == spark_sql.TARGET:
                raise
            self.warnings.append(
                f"the merge ran in DuckDB instead of Spark ({rows:,} step rows passed "
                f"engine.spark.min_rows): {exc.message}"
            )
            return None
        self.ran_on = spark_sql.TARGET
        return stored
