"""GUARDRAILS: the text that runs. A row cap on every SELECT (each UNION branch and the
outer result; see sql_rewrite) fetching cap + 1 rows so truncation shows, `maxTimeMS` and
the cap in MQL bodies, and the statement timeout: the smaller of the database's
`query_timeout_seconds` and `safety.query_timeout_seconds`. Writes get no cap. Rewrites are
cached by (dialect, text, cap), so a repeated query costs a dictionary lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.mql import MqlAnalysis, rewrite_mql
from safety.sql_rewrite import rewrite_sql
from safety.sql_template import add_render, learn
from safety.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName

_ROW_OPS = frozenset({"find", "aggregate"})


class Guardrails:
    name: StageName = "GUARDRAILS"

    def check(self, step: StepContext) -> Verdict:
        a = step.analysis
        if a.error is not None:
            return Block(f"cannot rewrite {step.label}: {a.error}", a.suggestion, "builtin")
        safety = step.config.safety
        timeout = safety.query_timeout_seconds
        policy = [f"safety.query_timeout_seconds={timeout:g}"]
        if (
            step.db is not None
            and step.db.query_timeout_seconds is not None
            and step.db.query_timeout_seconds < timeout
        ):
            timeout = step.db.query_timeout_seconds
            policy = [f"databases.{step.db.name}.query_timeout_seconds={timeout:g}"]
        cap = safety.max_rows_per_query
        step.timeout = timeout
        if isinstance(a, MqlAnalysis):
            step.row_cap = cap if a.op_name in _ROW_OPS else None
            step.text = rewrite_mql(step.step.query, step.row_cap, max(1, int(timeout * 1000)))
        else:
            step.row_cap = cap if a.returns_rows else None
            fetch = None if step.row_cap is None else step.row_cap + 1
            hit = step.template
            done = None if hit is None else hit.rewrite(fetch) or add_render(hit, fetch)
            if done is not None:
                step.text, step.link_text = done.text, done.link_text
                step.run_text, step.params = done.run_text, done.params
            else:
                step.text = rewrite_sql(step.dialect, step.step.query, fetch)
                step.link_text = rewrite_sql(step.dialect, step.step.query, None)
                if hit is None:
                    learn(step.dialect, step.step.query, a, fetch, step.text, step.link_text)
        if step.row_cap is not None:
            policy.append(f"safety.max_rows_per_query={cap}")
        return Allow(", ".join(policy))
