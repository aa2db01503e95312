"""GUARDRAILS: the text that runs. A row cap on every SELECT (each UNION branch and the
outer result; see sql_rewrite) fetching cap + 1 rows so truncation shows, `maxTimeMS` and
the cap in MQL bodies, and the statement timeout: the smaller of the database's
`query_timeout_seconds` and `safety.query_timeout_seconds`. Writes get no cap. Rewrites are
cached by (dialect, text, cap), so a repeated query costs a dictionary lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName


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
        asked = step.request.max_rows
        cap = asked or safety.max_rows_per_query
        step.timeout = timeout
        step.rewrite = step.language.rewrite(a, step.step.query, step.dialect, cap, timeout)
        if step.rewrite.row_cap is not None:
            policy.append(f"max_rows={cap}" if asked else f"safety.max_rows_per_query={cap}")
        return Allow(", ".join(policy))
